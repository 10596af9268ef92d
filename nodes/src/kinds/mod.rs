//! Built-in node kinds, one file each.

pub mod cache_config;
pub mod compare;
pub mod detailed_stats;
pub mod load_model;
pub mod sampler;
pub mod save_image;
pub mod sweep;

use crate::registry::Registry;

impl Registry {
    /// The built-in kinds. Add one line here per new kind.
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        registry.register(load_model::LoadModel);
        registry.register(sampler::Sampler);
        registry.register(save_image::SaveImage);
        registry.register(cache_config::CacheDitConfig);
        registry.register(detailed_stats::DetailedStats);
        registry.register(compare::Compare);
        registry.register(sweep::Sweep);
        registry
    }
}
