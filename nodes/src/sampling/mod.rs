//! The denoise loop, its progress reports, timing rounds and statistics.

pub mod denoise;
pub mod interleave;
pub mod latent_file;
pub mod measure;
pub mod progress;
pub mod stats;
pub mod vae_preview;

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{context}: {source}")]
    Candle {
        context: &'static str,
        #[source]
        source: candle_core::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    SchedulerConfig(#[from] crate::schedulers::SchedulerConfigError),
}
