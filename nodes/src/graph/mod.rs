//! The workflow document, its `.ron` form and its validation.

// The workflow document is its own top-level module (the registry reads its values without
// depending on validation); this keeps `graph::document` paths working.
pub use crate::document;
pub mod migrate;
pub mod preflight;
pub mod ron_io;
pub mod topo;
pub mod validate;

use std::path::PathBuf;
use validate::ValidationError;

/// Why a workflow could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Malformed `.ron` text; `line` and `column` are 1-based.
    #[error("{source_name}:{line}:{column}: {message}")]
    Parse {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file was written by a newer build with a format this one cannot read.
    #[error(
        "{source_name}: format version {found} is newer than this build supports \
         (up to {supported}); update CacheDiT Studio to open it"
    )]
    NewerVersion {
        source_name: String,
        found: u32,
        supported: u32,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The workflow could not be turned into `.ron` text.
    #[error("could not write workflow as RON: {0}")]
    Serialize(String),
    /// The workflow does not fit the registry (see [`validate::validate`]).
    #[error("invalid workflow: {}", join_errors(.0))]
    Invalid(Vec<ValidationError>),
}

fn join_errors(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Vec<ValidationError>> for GraphError {
    fn from(errors: Vec<ValidationError>) -> Self {
        GraphError::Invalid(errors)
    }
}
