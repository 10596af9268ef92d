//! What a sampling run reports as it goes: each finished step (with the step cache's
//! decisions and a preview) and, for a Sampler timing a baseline, where its rounds stand.

use crate::cache::CallRecord;
use crate::image::RgbImage;
use std::sync::Arc;

/// Progress of one denoising step of a sampler node.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// 0-based step index.
    pub index: usize,
    pub total: usize,
    /// The scheduler timestep of this step.
    pub timestep: f64,
    /// Wall time of the step (transformer calls, guidance, scheduler update), in ms.
    pub ms: f64,
    /// The transformer calls of this step and what the step cache decided on each.
    pub calls: Vec<CallRecord>,
    /// The first image of the batch as it stands after this step (the current noisy sample,
    /// decoded like the final one), for live previews. Sent at most every
    /// [`crate::sampling::denoise::PREVIEW_INTERVAL`] and always on the last step.
    pub preview: Option<Arc<RgbImage>>,
}

/// Which kind of run a measuring Sampler is timing (its `baseline` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurePhase {
    /// The uncached twin (silent: no step events, only this progress).
    Baseline,
    /// The cached run; its first round is the one the user sees (step events too).
    Cached,
}

/// Where a Sampler that times an uncached baseline stands: sent on every step of every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureProgress {
    pub phase: MeasurePhase,
    /// 1-based round, of `rounds`.
    pub round: usize,
    pub rounds: usize,
    /// Steps done in this run (1-based), of `steps`.
    pub step: usize,
    pub steps: usize,
    /// Runs finished before this one (each round makes two: uncached and cached).
    pub runs_done: usize,
}
