//! The executor: runs workflows on a background thread and reports events.

pub mod context;
pub mod data;
pub mod events;
pub mod executor;
pub mod memo;
pub mod message;

pub use events::{Event, MeasurePhase, MeasureProgress, RunId, RunOutcome, StepProgress};
pub use executor::{ExecConfig, ExecError, Executor};
