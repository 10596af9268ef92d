//! Subcommands of the `cachedit` CLI.

pub mod bench;
pub mod eval;
pub mod run;
pub mod stats;
pub mod train;
