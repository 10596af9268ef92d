//! Subcommands of the `cachedit` CLI.

pub mod bench;
pub mod bench_cache;
pub mod bench_serve;
pub mod calibrate;
pub mod eval;
pub mod run;
pub mod stats;
pub mod train;
