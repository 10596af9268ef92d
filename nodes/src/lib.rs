//! CacheDiT Studio engine: the workflow document, node kinds, executor, DiT models,
//! schedulers and the step cache. Everything here runs without a window.

pub mod cache;
pub mod compare;
pub mod dataset;
pub mod document;
pub use models::device;
pub mod eval;
pub mod events;
pub mod exec;
pub mod graph;
pub mod image;
pub use cachedit_kernels as kernels;
pub mod kinds;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod registry;
pub mod rng;
pub mod safe_io;
pub mod sampling;
pub mod schedulers;
pub mod train;
