//! DiT (diffusers `DiTTransformer2DModel`): config, embeddings, blocks, model, random init.

pub mod block;
pub mod config;
mod cpu_block;
mod cpu_io;
pub mod embeddings;
pub mod grad_ops;
pub mod model;
pub mod random;

pub use config::DiTConfig;
pub use model::{DiT, DiTCall, DiTState};
