//! Models that ship with the app and are found by name, and the one entry point that loads a
//! model from a built-in name or a checkpoint path.

use super::dit::{random, DiTConfig};
use super::loading::{dit_from_tensors, load_dit};
use super::{LoadedModel, ModelError};
use crate::device::{parse_dtype, DeviceSpec};
use std::path::Path;

/// A model found by name.
#[derive(Debug, Clone)]
pub struct BuiltinModel {
    pub name: &'static str,
    pub description: &'static str,
    config: fn() -> DiTConfig,
    seed: u64,
}

/// The untrained placeholder (seeded random weights) until the trained default model ships.
pub fn random_tiny_config() -> DiTConfig {
    DiTConfig {
        num_attention_heads: 3,
        attention_head_dim: 64,
        in_channels: 3,
        out_channels: Some(6),
        num_layers: 6,
        sample_size: 32,
        patch_size: 4,
        num_embeds_ada_norm: 10,
        ..DiTConfig::default()
    }
}

/// The embedded default model's architecture: 32×32 RGB, patch 4 (64 tokens), 128 wide,
/// 12 blocks, 10 scene classes, ε-prediction only.
pub fn scenes_dit_config() -> DiTConfig {
    DiTConfig {
        num_attention_heads: 4,
        attention_head_dim: 32,
        in_channels: 3,
        out_channels: None,
        num_layers: 12,
        sample_size: 32,
        patch_size: 4,
        num_embeds_ada_norm: 10,
        ..DiTConfig::default()
    }
}

pub fn builtin_models() -> Vec<BuiltinModel> {
    vec![BuiltinModel {
        name: "random-tiny",
        description: "untrained DiT (seeded random weights), 32×32 RGB, 6 blocks, 10 classes",
        config: random_tiny_config,
        seed: 0,
    }]
}

/// Loads `model` (a built-in name or a checkpoint path) on `device` (`cpu`, `cuda:N`) in
/// `dtype` (`auto`, `f32`, `f16`, `bf16`).
pub fn load_model(model: &str, dtype: &str, device: &str) -> Result<LoadedModel, ModelError> {
    let device = DeviceSpec::parse(device)?.open()?;
    let dtype = parse_dtype(dtype, &device)?;
    let dit = match builtin_models().into_iter().find(|m| m.name == model) {
        Some(b) => {
            let config = (b.config)();
            let tensors = random::random_tensors(&config, b.seed)
                .map_err(ModelError::candle(format!("built-in model {}", b.name)))?;
            dit_from_tensors(&config, tensors, dtype, &device)?
        }
        None => {
            let path = Path::new(model);
            if !path.exists() && !model.contains(['/', '\\']) && !model.contains('.') {
                let known: Vec<&str> = builtin_models().iter().map(|m| m.name).collect();
                return Err(ModelError::UnknownBuiltin {
                    name: model.to_string(),
                    known: known.join(", "),
                });
            }
            load_dit(path, dtype, &device)?
        }
    };
    Ok(LoadedModel {
        name: model.to_string(),
        dit,
        device,
        dtype,
    })
}
