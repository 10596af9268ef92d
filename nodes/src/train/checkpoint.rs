//! Training checkpoints: every tensor (weights, EMA, optimiser moments) in one safetensors file
//! plus a JSON state, both written atomically so a crash mid-save keeps the previous checkpoint.

use super::TrainError;
use candle_core::{Device, Tensor};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const TENSORS_FILE: &str = "checkpoint.safetensors";
pub const STATE_FILE: &str = "train_state.json";

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), TrainError> {
    let tmp: PathBuf = path.with_extension("partial");
    write(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e))
}

/// Saves `tensors` and `state` into `dir` (created if needed).
pub fn save<S: Serialize>(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &S,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    write_atomic(&dir.join(TENSORS_FILE), |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| e.to_string())
    })?;
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::file(dir, e))?;
    write_atomic(&dir.join(STATE_FILE), |tmp| {
        std::fs::write(tmp, text).map_err(|e| e.to_string())
    })
}

/// True when `dir` holds a checkpoint to resume from.
pub fn exists(dir: &Path) -> bool {
    dir.join(TENSORS_FILE).is_file() && dir.join(STATE_FILE).is_file()
}

/// Loads what [`save`] wrote.
pub fn load<S: DeserializeOwned>(
    dir: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, S), TrainError> {
    let state_path = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&state_path).map_err(|e| TrainError::file(&state_path, e))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::file(&state_path, e))?;
    let tensor_path = dir.join(TENSORS_FILE);
    let tensors = candle_core::safetensors::load(&tensor_path, device)
        .map_err(|e| TrainError::file(&tensor_path, e))?;
    Ok((tensors, state))
}

/// The tensors under `prefix.` with the prefix removed.
pub fn with_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// `tensors` renamed to `prefix.NAME`.
pub fn prefixed(tensors: HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
}
