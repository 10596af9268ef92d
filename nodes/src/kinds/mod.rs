//! Built-in node kinds, one file each.

pub mod load_model;
pub mod sampler;
pub mod save_image;
