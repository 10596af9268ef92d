//! Built-in node kinds, one file each.

pub mod cache_config;
pub mod compare;
pub mod detailed_stats;
pub mod load_model;
pub mod sampler;
pub mod save_image;
pub mod sweep;
