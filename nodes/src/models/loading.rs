//! Loading and saving DiT checkpoints in diffusers layout: `config.json` next to
//! `diffusion_pytorch_model.safetensors` (memory-mapped, sharded or not) or a PyTorch `.bin`,
//! and, in a pipeline folder, its `scheduler/scheduler_config.json`. Every size a file
//! declares is checked against the bytes present and the memory allowed before it is
//! allocated, and weights must be floating point.

use super::dit::{DiT, DiTConfig};
use super::vae::{Vae, VaeConfig};
use super::{pytorch, ModelError};
use crate::memory::{available_bytes, show_bytes};
use crate::safe_io;
use crate::schedulers::SchedulerConfig;
use candle_core::safetensors::{MmapedSafetensors, SliceSafetensors};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The largest `config.json` or safetensors index read (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// How much a load may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Host memory for the weights and, on the CPU, one step's activations.
    pub memory_bytes: u64,
}

impl LoadLimits {
    /// What the machine has available now (no bound where the system does not say).
    pub fn machine() -> Self {
        LoadLimits {
            memory_bytes: available_bytes().unwrap_or(u64::MAX),
        }
    }
}

/// The format of weights given as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors,
    /// A PyTorch zip checkpoint (`.bin`, `.pt`).
    Pytorch,
}

/// The files of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFiles {
    pub config: PathBuf,
    pub weights: Weights,
    /// The pipeline's `scheduler/scheduler_config.json`, when the checkpoint is (or is the
    /// `transformer/` of) a pipeline folder that has one.
    pub scheduler_config: Option<PathBuf>,
    /// The pipeline's `vae/` folder, when it has a `config.json`.
    pub vae: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// One or more safetensors files (several when sharded).
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle (`.bin` / `.pt`).
    Pytorch(PathBuf),
}

pub(crate) fn file_error(path: &Path, message: impl Into<String>) -> ModelError {
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

/// The pipeline folder `path` belongs to: `path` itself when it holds a `transformer/`, else
/// the folder above the checkpoint folder when that has `model_index.json` (as the folder
/// above `transformer/` does).
pub(crate) fn pipeline_of(path: &Path) -> Option<PathBuf> {
    if path.is_dir() && path.join("transformer").join("config.json").is_file() {
        return Some(path.to_path_buf());
    }
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    let parent = dir.parent()?;
    parent
        .join("model_index.json")
        .is_file()
        .then(|| parent.to_path_buf())
}

/// `<pipeline>/vae` when it has a `config.json`.
fn vae_in(pipeline: &Path) -> Option<PathBuf> {
    let vae = pipeline.join("vae");
    vae.join("config.json").is_file().then_some(vae)
}

/// Finds config and weights for `path`: a checkpoint folder, a diffusers pipeline folder
/// (uses its `transformer/`), or a weights file with `config.json` beside it; and the
/// pipeline's scheduler config and VAE, if any.
pub fn locate(path: &Path) -> Result<CheckpointFiles, ModelError> {
    let mut files = locate_weights(path)?;
    let pipeline = pipeline_of(path);
    files.scheduler_config = pipeline.as_deref().and_then(scheduler_config_in);
    files.vae = pipeline.as_deref().and_then(vae_in);
    Ok(files)
}

pub(crate) fn locate_weights(path: &Path) -> Result<CheckpointFiles, ModelError> {
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
            vae: None,
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
        vae: None,
    })
}

/// The shard files named by a safetensors index (`weight_map` values), each once, in order.
pub(crate) fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let text = safe_io::read_text_bounded(index, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(index, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_error(index, e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| file_error(index, "no weight_map"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        let plain = Path::new(file)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(file_error(
                index,
                format!("shard {file:?} is not a file name inside the checkpoint folder"),
            ));
        }
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
    let text = safe_io::read_text_bounded(path, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(path, e.to_string()))?;
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

/// Loads a DiT checkpoint (see [`locate`]) onto `device` in `dtype`, within what the
/// machine has available.
pub fn load_dit(path: &Path, dtype: DType, device: &Device) -> Result<DiT, ModelError> {
    load_located(&locate(path)?, dtype, device, LoadLimits::machine())
}

/// Loads a DiT checkpoint, the scheduler config of its pipeline (DiT's default when it has
/// none) and the pipeline's VAE, if any. A bad scheduler config fails here, naming the file
/// and the field.
pub fn load_checkpoint(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(DiT, SchedulerConfig, Option<Vae>), ModelError> {
    let files = locate(path)?;
    let scheduler = match &files.scheduler_config {
        Some(p) => SchedulerConfig::read(p)?,
        None => SchedulerConfig::default(),
    };
    let dit = load_located(&files, dtype, device, LoadLimits::machine())?;
    let vae = match &files.vae {
        Some(dir) => Some(load_vae(dir, dtype, device)?),
        None => None,
    };
    Ok((dit, scheduler, vae))
}

/// Refuses a config whose step would need more memory than allowed. On the CPU the whole
/// estimate counts; on a GPU its own allocator reports exhaustion as an error, so only the
/// weights staged in host memory are counted, by the weight readers.
pub fn check_memory(
    config: &DiTConfig,
    dtype: DType,
    device: &Device,
    limits: LoadLimits,
    origin: &str,
) -> Result<(), ModelError> {
    if !device.is_cpu() {
        return Ok(());
    }
    let need = config
        .memory_estimate(2, dtype.size_in_bytes())
        .ok_or_else(|| ModelError::File {
            path: origin.to_string(),
            message: "the model's sizes overflow".into(),
        })?;
    if need > limits.memory_bytes {
        return Err(ModelError::File {
            path: origin.to_string(),
            message: format!(
                "this model needs about {} to run a step ({} weights, sample_size {}, {} layers of width {}), but {} is available",
                show_bytes(need),
                config.weight_count().unwrap_or(0),
                config.sample_size,
                config.num_layers,
                config.hidden_size(),
                show_bytes(limits.memory_bytes)
            ),
        });
    }
    Ok(())
}

/// Checks a safetensors file's tensors before any is read: floating point only, and their
/// size in `dtype` within the limit.
fn check_safetensors<'a>(
    tensors: impl IntoIterator<Item = (String, TensorView<'a>)>,
    dtype: DType,
    limits: LoadLimits,
) -> Result<u64, String> {
    let mut total: u64 = 0;
    for (name, view) in tensors {
        let stored = DType::try_from(view.dtype()).map_err(|_| {
            format!(
                "tensor {name} is stored as {:?}, which is not read",
                view.dtype()
            )
        })?;
        if !stored.is_float() {
            return Err(format!(
                "tensor {name} is stored as {stored:?} where model weights must be floating point"
            ));
        }
        let bytes = view
            .shape()
            .iter()
            .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
                n.checked_mul(d as u64)
            })
            .ok_or_else(|| format!("tensor {name}: shape {:?} overflows", view.shape()))?;
        total = total.saturating_add(bytes);
    }
    if total > limits.memory_bytes {
        return Err(format!(
            "the weights take {} in {dtype:?}, but {} is available",
            show_bytes(total),
            show_bytes(limits.memory_bytes)
        ));
    }
    Ok(total)
}

fn load_located(
    files: &CheckpointFiles,
    dtype: DType,
    device: &Device,
    limits: LoadLimits,
) -> Result<DiT, ModelError> {
    let config = read_config(&files.config)?;
    check_memory(
        &config,
        dtype,
        device,
        limits,
        &files.config.display().to_string(),
    )?;
    let (vb, shown, _) = var_builder(&files.weights, dtype, device, limits)?;
    DiT::new(&config, vb).map_err(|e| file_error(&shown, e.to_string()))
}

/// The weights of a checkpoint, checked (regular files, floating point, within the memory
/// limit) and ready to build a model from; with the file to name in errors.
pub(crate) fn var_builder(
    weights: &Weights,
    dtype: DType,
    device: &Device,
    limits: LoadLimits,
) -> Result<(VarBuilder<'static>, PathBuf, u64), ModelError> {
    Ok(match weights {
        Weights::Safetensors(paths) => {
            for p in paths {
                // A missing shard, a FIFO or a device is refused here, naming it.
                safe_io::open_regular(p).map_err(|e| {
                    file_error(p, format!("{e} (a weights file named by the checkpoint)"))
                })?;
            }
            // SAFETY: the files are memory-mapped read-only; like every mmap-based loader we
            // rely on nobody truncating them while the model is alive.
            let mapped = unsafe { MmapedSafetensors::multi(paths) }
                .map_err(|e| file_error(&paths[0], e.to_string()))?;
            let bytes = check_safetensors(mapped.tensors(), dtype, limits)
                .map_err(|e| file_error(&paths[0], e))?;
            let vb = VarBuilder::from_backend(Box::new(mapped), dtype, device.clone());
            (vb, paths[0].clone(), bytes)
        }
        Weights::Pytorch(p) => {
            let file = safe_io::open_regular(p).map_err(|e| file_error(p, e.to_string()))?;
            let len = file
                .metadata()
                .map_err(|e| file_error(p, e.to_string()))?
                .len();
            let tensors =
                pytorch::read_pth(std::io::BufReader::new(file), len, limits.memory_bytes)
                    .map_err(|e| file_error(p, e))?;
            let bytes = tensors
                .iter()
                .map(|(_, t)| (t.elem_count() * dtype.size_in_bytes()) as u64)
                .sum();
            let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), dtype, device);
            (vb, p.clone(), bytes)
        }
    })
}

/// `vae/config.json`, checked.
pub fn read_vae_config(path: &Path) -> Result<VaeConfig, ModelError> {
    let text = safe_io::read_text_bounded(path, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(path, e.to_string()))?;
    parse_vae_config(&text, &path.display().to_string())
}

/// A VAE `config.json`'s text, parsed and checked; errors name `origin`.
pub fn parse_vae_config(json: &str, origin: &str) -> Result<VaeConfig, ModelError> {
    let bad = |message: String| ModelError::File {
        path: origin.to_string(),
        message,
    };
    let config: VaeConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    config.check().map_err(bad)?;
    Ok(config)
}

/// Loads the `AutoencoderKL` in `dir` (`config.json` + `diffusion_pytorch_model.*`).
pub fn load_vae(dir: &Path, dtype: DType, device: &Device) -> Result<Vae, ModelError> {
    let files = locate_weights(dir)?;
    let config = read_vae_config(&files.config)?;
    let (vb, shown, bytes) = var_builder(&files.weights, dtype, device, LoadLimits::machine())?;
    Vae::new(&config, vb, bytes).map_err(|e| file_error(&shown, e.to_string()))
}

/// Loads a DiT onto the CPU in f32 from a `config.json`'s text and weights in memory, with
/// every check a file load makes: what the fuzzers drive, and a way to load without files.
pub fn load_checkpoint_bytes(
    config_json: &str,
    weights: &[u8],
    format: WeightsFormat,
    limits: LoadLimits,
) -> Result<DiT, ModelError> {
    let origin = "weights";
    let bad = |message: String| ModelError::File {
        path: origin.to_string(),
        message,
    };
    let config = parse_config(config_json, "config.json")?;
    let (dtype, device) = (DType::F32, Device::Cpu);
    check_memory(&config, dtype, &device, limits, "config.json")?;
    let vb = match format {
        WeightsFormat::Safetensors => {
            let slice = SliceSafetensors::new(weights).map_err(|e| bad(e.to_string()))?;
            check_safetensors(slice.tensors(), dtype, limits).map_err(bad)?;
            VarBuilder::from_backend(Box::new(slice), dtype, device)
        }
        WeightsFormat::Pytorch => {
            let tensors = pytorch::read_pth(
                std::io::Cursor::new(weights),
                weights.len() as u64,
                limits.memory_bytes,
            )
            .map_err(bad)?;
            VarBuilder::from_tensors(tensors.into_iter().collect(), dtype, &device)
        }
    };
    DiT::new(&config, vb).map_err(|e| bad(e.to_string()))
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
