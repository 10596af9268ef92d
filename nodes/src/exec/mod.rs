//! The executor: runs workflows on a background thread and reports events.

pub mod executor;
pub mod memo;
pub mod message;

// Where these lived before the registry owned them; kept so that paths stay stable.
pub use crate::events;
pub use crate::registry::{context, data};

pub use events::{Event, MeasurePhase, MeasureProgress, RunId, RunOutcome, StepProgress};
pub use executor::{ExecConfig, ExecError, Executor};
