//! Stable in-process mutation fuzzing of the project's parsers and loaders (the toolchain here
//! is stable Rust, so `cargo fuzz`'s nightly libFuzzer is out of reach): a counting allocator
//! with a hard cap, havoc-style mutations, outcome-guided corpus growth, and a supervisor that
//! turns an abort into a saved input.

pub mod alloc;
pub mod engine;
pub mod mutate;
pub mod targets;
