//! Model architectures (DiT now) and loading them from checkpoint folders or built-in names.

pub mod builtin;
pub mod dit;
pub mod loading;
pub mod pytorch;

use crate::sampling::schedulers::{SchedulerConfig, SchedulerConfigError};
use candle_core::{DType, Device};

/// A loaded model, shared between nodes (node reuse keeps it across runs).
#[derive(Debug)]
pub struct LoadedModel {
    /// Built-in name or folder, as the user gave it.
    pub name: String,
    pub dit: dit::DiT,
    pub device: Device,
    pub dtype: DType,
    /// The scheduler fields the Sampler builds its scheduler class from: the pipeline's
    /// `scheduler/scheduler_config.json` (its path is `scheduler_config.source()`), or DiT's
    /// default config for built-in models and plain checkpoints (`source()` is `None`).
    pub scheduler_config: SchedulerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    SchedulerConfig(#[from] SchedulerConfigError),
    #[error("unknown built-in model {name:?}; built-in models: {known}")]
    UnknownBuiltin { name: String, known: String },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

impl ModelError {
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
        let context = context.into();
        move |source| ModelError::Candle { context, source }
    }
}
