//! Models that ship with the app and are found by name, and the one entry point that loads a
//! model from a built-in name or a checkpoint path.

use super::blocks::BlockTransformer;
use super::device::{parse_dtype, DeviceSpec};
use super::dit::DiT;
use super::dit::{random, DiTConfig};
use super::loading::{dit_from_tensors, load_checkpoint, locate, parse_config, read_config};
use super::{LoadedModel, ModelError};
use crate::schedulers::SchedulerConfig;
use candle_core::{DType, Device};
use std::path::Path;
use std::sync::Arc;

/// A model found by name.
#[derive(Debug, Clone)]
pub struct BuiltinModel {
    pub name: &'static str,
    pub description: &'static str,
    weights: BuiltinWeights,
}

/// Where a built-in model's weights come from.
#[derive(Debug, Clone)]
enum BuiltinWeights {
    /// Seeded random weights for an architecture (an untrained control).
    Random {
        config: fn() -> DiTConfig,
        seed: u64,
    },
    /// A diffusers checkpoint compiled into the binary.
    Embedded {
        config_json: &'static str,
        safetensors: &'static [u8],
    },
}

/// The embedded default model (`cachedit train`; see models/scenes-dit/README.md).
const SCENES_DIT_CONFIG: &str = include_str!("../../../models/scenes-dit/config.json");
const SCENES_DIT_WEIGHTS: &[u8] =
    include_bytes!("../../../models/scenes-dit/diffusion_pytorch_model.safetensors");

/// The name of the model new workflows use.
pub const DEFAULT_MODEL: &str = "scenes-dit";

/// A small untrained DiT (seeded random weights): fast, for tests and as the control that
/// shows what the trained model's evaluation numbers mean.
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
    vec![
        BuiltinModel {
            name: DEFAULT_MODEL,
            description: "trained DiT (embedded), 32×32 RGB scenes, 12 blocks, 10 classes",
            weights: BuiltinWeights::Embedded {
                config_json: SCENES_DIT_CONFIG,
                safetensors: SCENES_DIT_WEIGHTS,
            },
        },
        BuiltinModel {
            name: "random-tiny",
            description: "untrained DiT (seeded random weights), 32×32 RGB, 6 blocks, 10 classes",
            weights: BuiltinWeights::Random {
                config: random_tiny_config,
                seed: 0,
            },
        },
    ]
}

impl BuiltinModel {
    /// The model's architecture.
    pub fn config(&self) -> Result<DiTConfig, ModelError> {
        match &self.weights {
            BuiltinWeights::Random { config, .. } => Ok(config()),
            BuiltinWeights::Embedded { config_json, .. } => parse_config(
                config_json,
                &format!("built-in model {} (config.json)", self.name),
            ),
        }
    }

    fn load(&self, dtype: DType, device: &Device) -> Result<DiT, ModelError> {
        let context = format!("built-in model {}", self.name);
        let config = self.config()?;
        let tensors = match &self.weights {
            BuiltinWeights::Random { seed, .. } => random::random_tensors(&config, *seed),
            BuiltinWeights::Embedded { safetensors, .. } => {
                candle_core::safetensors::load_buffer(safetensors, &Device::Cpu)
            }
        }
        .map_err(ModelError::candle(context))?;
        dit_from_tensors(&config, tensors, dtype, device)
    }
}

/// Loads `model` (a built-in name or a checkpoint path) on `device` (`cpu`, `cuda:N`) in
/// `dtype` (`auto`, `f32`, `f16`, `bf16`).
pub fn load_model(model: &str, dtype: &str, device: &str) -> Result<LoadedModel, ModelError> {
    let device = DeviceSpec::parse(device)?.open()?;
    let dtype = parse_dtype(dtype, &device)?;
    let (model_any, scheduler_config, vae, text) =
        match builtin_models().into_iter().find(|m| m.name == model) {
            Some(b) => (
                super::AnyModel::Dit(b.load(dtype, &device)?),
                SchedulerConfig::default(),
                None,
                None,
            ),
            None => {
                let path = checkpoint_path(model)?;
                if super::flux::loading::is_flux(path) {
                    let parts = super::flux::loading::load_flux(path, dtype, &device)?;
                    (
                        super::AnyModel::Flux(parts.transformer),
                        parts.scheduler,
                        parts.vae.map(Arc::new),
                        parts.text.map(Arc::new),
                    )
                } else {
                    let (dit, scheduler, vae) = load_checkpoint(path, dtype, &device)?;
                    (
                        super::AnyModel::Dit(dit),
                        scheduler,
                        vae.map(Arc::new),
                        None,
                    )
                }
            }
        };
    if let Some(v) = &vae {
        let (wanted, has) = (model_any.latent().channels, v.config().latent_channels);
        if wanted != has {
            return Err(ModelError::File {
                path: model.to_string(),
                message: format!(
                    "the transformer makes {wanted}-channel latents but the VAE decodes {has}"
                ),
            });
        }
    }
    Ok(LoadedModel {
        name: model.to_string(),
        model: model_any,
        vae,
        text,
        device,
        dtype,
        scheduler_config,
    })
}

/// `model` as a checkpoint path, or the unknown-built-in error when it looks like a name
/// (no slash, no dot) and nothing of that name exists.
fn checkpoint_path(model: &str) -> Result<&Path, ModelError> {
    let path = Path::new(model);
    if !path.exists() && !model.contains(['/', '\\']) && !model.contains('.') {
        let known: Vec<&str> = builtin_models().iter().map(|m| m.name).collect();
        return Err(ModelError::UnknownBuiltin {
            name: model.to_string(),
            known: known.join(", "),
        });
    }
    Ok(path)
}

/// The architecture of `model` (a built-in name or a checkpoint path) without reading its
/// weights: what `validate` checks class labels and latents against. A pipeline folder's
/// scheduler config is read and checked too, so that its errors show before a run.
pub fn model_config(model: &str) -> Result<DiTConfig, ModelError> {
    match builtin_models().into_iter().find(|m| m.name == model) {
        Some(b) => b.config(),
        None => {
            let files = locate(checkpoint_path(model)?)?;
            if let Some(scheduler) = &files.scheduler_config {
                SchedulerConfig::read(scheduler)?;
            }
            read_config(&files.config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_model_is_the_scenes_architecture() {
        let default = builtin_models()
            .into_iter()
            .find(|m| m.name == DEFAULT_MODEL)
            .expect("the default model is built in");
        assert_eq!(default.config().unwrap(), scenes_dit_config());
        let loaded = load_model(DEFAULT_MODEL, "f32", "cpu").unwrap();
        assert_eq!(
            loaded.model.as_dit().expect("a DiT").config().num_layers,
            12
        );
    }

    #[test]
    fn an_unknown_name_lists_the_built_in_models() {
        let err = load_model("no-such-model", "f32", "cpu").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("scenes-dit") && text.contains("random-tiny"),
            "{text}"
        );
    }
}
