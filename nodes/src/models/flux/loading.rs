//! Loading a diffusers `FluxPipeline` folder unchanged: `transformer/` (sharded or not, any
//! float dtype, memory-mapped), `vae/`, `scheduler/`, and the text encoders with their
//! tokenizers (`text_encoder/` + `tokenizer/`: CLIP-L; `text_encoder_2/` + `tokenizer_2/`: T5).

use super::{Flux, FluxConfig};
use crate::models::loading::{
    file_error, load_vae, locate, pipeline_of, shards_from_index, var_builder, LoadLimits, Weights,
    MAX_CONFIG_BYTES,
};
use crate::models::text::tokenize::PromptTokenizer;
use crate::models::text::{ClipFields, EncoderFiles, PromptEncoder};
use crate::models::vae::Vae;
use crate::models::ModelError;
use crate::safe_io;
use crate::schedulers::SchedulerConfig;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// The class name of the transformer a FLUX.1 checkpoint holds.
pub const FLUX_CLASS: &str = "FluxTransformer2DModel";

/// FluxPipeline's default `max_sequence_length` (T5 tokens).
pub const DEFAULT_T5_LENGTH: usize = 512;

/// What a FLUX.1 pipeline folder loads into.
#[derive(Debug)]
pub struct FluxParts {
    pub transformer: Flux,
    /// Bytes of the transformer's weights in the load dtype.
    pub transformer_bytes: u64,
    pub scheduler: SchedulerConfig,
    pub vae: Option<Vae>,
    /// `None` when the folder has no text encoders (a bare `transformer/`).
    pub text: Option<PromptEncoder>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = safe_io::read_text_bounded(path, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file_error(path, e.to_string()))
}

/// A FLUX.1 `config.json`'s text, parsed and checked; errors name `origin`.
pub fn parse_flux_config(json: &str, origin: &str) -> Result<FluxConfig, ModelError> {
    let bad = |message: String| ModelError::File {
        path: origin.to_string(),
        message,
    };
    let config: FluxConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    config.check().map_err(bad)?;
    Ok(config)
}

fn read_flux_config(path: &Path) -> Result<FluxConfig, ModelError> {
    let text = safe_io::read_text_bounded(path, MAX_CONFIG_BYTES)
        .map_err(|e| file_error(path, e.to_string()))?;
    parse_flux_config(&text, &path.display().to_string())
}

/// Whether `path` (anything [`locate`] takes) holds a FLUX.1 transformer: its `config.json`
/// says `"_class_name": "FluxTransformer2DModel"`.
pub fn is_flux(path: &Path) -> bool {
    locate(path)
        .ok()
        .and_then(|files| read_json(&files.config).ok())
        .and_then(|json| {
            json.get("_class_name")
                .and_then(|c| c.as_str())
                .map(|c| c == FLUX_CLASS)
        })
        .unwrap_or(false)
}

/// transformers' weight files in `dir`: `model.safetensors` or its sharded index.
fn transformers_weights(dir: &Path) -> Result<Weights, ModelError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.is_file() {
        Ok(Weights::Safetensors(vec![single]))
    } else if index.is_file() {
        Ok(Weights::Safetensors(shards_from_index(&index)?))
    } else {
        Err(file_error(
            dir,
            "no model.safetensors or model.safetensors.index.json in this folder",
        ))
    }
}

/// The CLIP and T5 encoders of `pipeline`, or `None` when it has neither.
fn load_text(
    pipeline: &Path,
    dtype: DType,
    device: &Device,
) -> Result<Option<PromptEncoder>, ModelError> {
    let clip_dir = pipeline.join("text_encoder");
    let t5_dir = pipeline.join("text_encoder_2");
    if !clip_dir.exists() && !t5_dir.exists() {
        return Ok(None);
    }
    let clip_config_path = clip_dir.join("config.json");
    let clip_config: ClipFields = serde_json::from_value(read_json(&clip_config_path)?)
        .map_err(|e| file_error(&clip_config_path, e.to_string()))?;
    let t5_config_path = t5_dir.join("config.json");
    let t5_config: candle_transformers::models::t5::Config =
        serde_json::from_value(read_json(&t5_config_path)?)
            .map_err(|e| file_error(&t5_config_path, e.to_string()))?;
    let limits = LoadLimits::machine();
    let (clip_weights, _, _) =
        var_builder(&transformers_weights(&clip_dir)?, dtype, device, limits)?;
    let (t5_weights, _, _) = var_builder(&transformers_weights(&t5_dir)?, dtype, device, limits)?;
    let tokenizer = |dir: PathBuf, length| {
        PromptTokenizer::read(&dir, length).map_err(|message| ModelError::File {
            path: dir.display().to_string(),
            message,
        })
    };
    let files = EncoderFiles {
        clip_config: &clip_config,
        clip_weights,
        clip_tokenizer: tokenizer(pipeline.join("tokenizer"), None)?,
        t5_config: &t5_config,
        t5_weights,
        t5_tokenizer: tokenizer(pipeline.join("tokenizer_2"), Some(DEFAULT_T5_LENGTH))?,
    };
    PromptEncoder::new(files, device)
        .map(Some)
        .map_err(|message| file_error(pipeline, message))
}

/// Loads a FLUX.1 pipeline folder (or a bare `transformer/` folder) onto `device` in `dtype`.
pub fn load_flux(path: &Path, dtype: DType, device: &Device) -> Result<FluxParts, ModelError> {
    let files = locate(path)?;
    let config = read_flux_config(&files.config)?;
    let (vb, shown, transformer_bytes) =
        var_builder(&files.weights, dtype, device, LoadLimits::machine())?;
    let transformer = Flux::new(&config, vb).map_err(|e| file_error(&shown, e.to_string()))?;
    let scheduler = match &files.scheduler_config {
        Some(p) => SchedulerConfig::read(p)?,
        None => SchedulerConfig::flux_default(config.guidance_embeds),
    };
    let vae = match &files.vae {
        Some(dir) => Some(load_vae(dir, dtype, device)?),
        None => None,
    };
    let text = match pipeline_of(path) {
        Some(pipeline) => load_text(&pipeline, dtype, device)?,
        None => None,
    };
    Ok(FluxParts {
        transformer,
        transformer_bytes,
        scheduler,
        vae,
        text,
    })
}

/// The FLUX.1 config at `path` (anything [`locate`] takes), read and checked, or `None` when
/// `path` holds no FLUX.1 transformer; the weights are not read.
pub fn flux_config(path: &Path) -> Option<Result<FluxConfig, ModelError>> {
    if !is_flux(path) {
        return None;
    }
    Some(locate(path).and_then(|files| {
        let config = read_flux_config(&files.config)?;
        if let Some(scheduler) = &files.scheduler_config {
            SchedulerConfig::read(scheduler)?;
        }
        Ok(config)
    }))
}
