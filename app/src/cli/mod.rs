//! Subcommands of the `cachedit` CLI.

pub mod bench;
pub mod run;
pub mod stats;
