//! Loading and saving DiT checkpoints in diffusers layout: `config.json` next to
//! `diffusion_pytorch_model.safetensors` (memory-mapped, sharded or not) or a PyTorch `.bin`,
//! and, in a pipeline folder, its `scheduler/scheduler_config.json`.

use super::dit::{DiT, DiTConfig};
use super::ModelError;
use crate::sampling::schedulers::SchedulerConfig;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFiles {
    pub config: PathBuf,
    pub weights: Weights,
    /// The pipeline's `scheduler/scheduler_config.json`, when the checkpoint is (or is the
    /// `transformer/` of) a pipeline folder that has one.
    pub scheduler_config: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// One or more safetensors files (several when sharded).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`.bin` / `.pt`).
    Pytorch(PathBuf),
}

fn file_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// `<pipeline>/scheduler/scheduler_config.json` if there is anything at that path (a
/// non-regular file is found here and refused when read, naming it).
fn scheduler_config_in(pipeline: &Path) -> Option<PathBuf> {
    let path = pipeline.join("scheduler").join("scheduler_config.json");
    path.exists().then_some(path)
}

/// The scheduler config beside a checkpoint folder `dir` that sits in a pipeline folder (one
/// with `model_index.json`), as `transformer/` does.
fn sibling_scheduler_config(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    if parent.join("model_index.json").is_file() {
        scheduler_config_in(parent)
    } else {
        None
    }
}

/// Finds config and weights for `path`: a checkpoint folder, a diffusers pipeline folder
/// (uses its `transformer/`), or a weights file with `config.json` beside it; and the
/// pipeline's scheduler config, if any.
pub fn locate(path: &Path) -> Result<CheckpointFiles, ModelError> {
    let mut files = locate_weights(path)?;
    files.scheduler_config =
        if path.is_dir() && path.join("transformer").join("config.json").is_file() {
            scheduler_config_in(path)
        } else {
            let dir = if path.is_file() {
                path.parent().unwrap_or(Path::new("."))
            } else {
                path
            };
            sibling_scheduler_config(dir)
        };
    Ok(files)
}

fn locate_weights(path: &Path) -> Result<CheckpointFiles, ModelError> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(file_error(path, "no config.json beside this weights file"));
        }
        let is_pickle = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("bin" | "pt" | "pth")
        );
        let weights = if is_pickle {
            Weights::Pytorch(path.to_path_buf())
        } else {
            Weights::Safetensors(vec![path.to_path_buf()])
        };
        return Ok(CheckpointFiles {
            config,
            weights,
            scheduler_config: None,
        });
    }
    if !path.is_dir() {
        return Err(file_error(path, "no such file or folder"));
    }
    if path.join("transformer").join("config.json").is_file() {
        return locate_weights(&path.join("transformer"));
    }
    let config = path.join("config.json");
    if !config.is_file() {
        return Err(file_error(path, "folder has no config.json"));
    }
    let single = path.join("diffusion_pytorch_model.safetensors");
    let index = path.join("diffusion_pytorch_model.safetensors.index.json");
    let pickle = path.join("diffusion_pytorch_model.bin");
    let weights = if single.is_file() {
        Weights::Safetensors(vec![single])
    } else if index.is_file() {
        Weights::Safetensors(shards_from_index(&index)?)
    } else if pickle.is_file() {
        Weights::Pytorch(pickle)
    } else {
        return Err(file_error(
            path,
            "no diffusion_pytorch_model.safetensors, sharded index or .bin in this folder",
        ));
    };
    Ok(CheckpointFiles {
        config,
        weights,
        scheduler_config: None,
    })
}

/// The shard files named by a safetensors index (`weight_map` values), each once, in order.
fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|e| file_error(index, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_error(index, e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| file_error(index, "no weight_map"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a diffusers `config.json` for a DiT.
pub fn read_config(path: &Path) -> Result<DiTConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    parse_config(&text, &path.display().to_string())
}

/// Parses and checks the text of a `config.json`; `origin` names it in errors.
pub fn parse_config(json: &str, origin: &str) -> Result<DiTConfig, ModelError> {
    let bad = |message: String| ModelError::File {
        path: origin.to_string(),
        message,
    };
    let config: DiTConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    config.check().map_err(bad)?;
    Ok(config)
}

/// Loads a DiT checkpoint (see [`locate`]) onto `device` in `dtype`.
pub fn load_dit(path: &Path, dtype: DType, device: &Device) -> Result<DiT, ModelError> {
    load_located(&locate(path)?, dtype, device)
}

/// Loads a DiT checkpoint and the scheduler config of its pipeline (DiT's default when it has
/// none). A bad scheduler config fails here, naming the file and the field.
pub fn load_checkpoint(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(DiT, SchedulerConfig), ModelError> {
    let files = locate(path)?;
    let scheduler = match &files.scheduler_config {
        Some(p) => SchedulerConfig::read(p)?,
        None => SchedulerConfig::default(),
    };
    Ok((load_located(&files, dtype, device)?, scheduler))
}

fn load_located(files: &CheckpointFiles, dtype: DType, device: &Device) -> Result<DiT, ModelError> {
    let config = read_config(&files.config)?;
    let (vb, shown) = match &files.weights {
        Weights::Safetensors(paths) => {
            for p in paths {
                if !p.is_file() {
                    return Err(file_error(p, "shard named in the index is missing"));
                }
            }
            // SAFETY: the files are memory-mapped read-only; like every mmap-based loader we
            // rely on nobody truncating them while the model is alive.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }
                .map_err(|e| file_error(&paths[0], e.to_string()))?;
            (vb, paths[0].clone())
        }
        Weights::Pytorch(p) => {
            let vb =
                VarBuilder::from_pth(p, dtype, device).map_err(|e| file_error(p, e.to_string()))?;
            (vb, p.clone())
        }
    };
    DiT::new(&config, vb).map_err(|e| file_error(&shown, e.to_string()))
}

/// Builds a DiT from in-memory tensors (diffusers names).
pub fn dit_from_tensors(
    config: &DiTConfig,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<DiT, ModelError> {
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    DiT::new(config, vb).map_err(ModelError::candle("building DiT from tensors"))
}

/// Writes a checkpoint folder diffusers can load: `config.json` + safetensors.
pub fn save_dit(
    dir: &Path,
    config: &DiTConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e.to_string()))?;
    let mut json = serde_json::to_value(config).map_err(|e| file_error(dir, e.to_string()))?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("_class_name".into(), "DiTTransformer2DModel".into());
    }
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| file_error(dir, e.to_string()))?;
    std::fs::write(&config_path, text).map_err(|e| file_error(&config_path, e.to_string()))?;
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(tensors, &weights)
        .map_err(|e| file_error(&weights, e.to_string()))
}
