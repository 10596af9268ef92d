//! The step cache: reuses transformer residuals across denoising steps.

pub mod record;

pub use record::{CallRecord, CfgBranch, Decision, Reason};

/// Step-cache settings carried from a config node to a Sampler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepCacheConfig {}
