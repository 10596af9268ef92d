//! Training the embedded default model (and its quality classifier) in candle on the CPU or GPU:
//! data batches from the procedural dataset, weight init, AdamW with EMA, checkpoints that resume.

pub mod batch;
pub mod checkpoint;
pub mod classifier;
pub mod diffusion;
pub mod init;
pub mod optim;
pub mod progress;

/// Errors while training; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
}

impl TrainError {
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> TrainError {
        let context = context.into();
        move |source| TrainError::Candle { context, source }
    }

    pub fn file(path: &std::path::Path, message: impl std::fmt::Display) -> TrainError {
        TrainError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}
