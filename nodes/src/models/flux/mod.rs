//! FLUX.1 (diffusers `FluxTransformer2DModel`, dev and schnell): config, embeddings and RoPE,
//! the dual- and single-stream blocks, and the model on the block contract.

pub mod block;
pub mod config;
pub mod embeddings;
pub mod loading;
pub mod model;

pub use config::FluxConfig;
pub use model::{pack, unpack, Flux, FluxCall};
