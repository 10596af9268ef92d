//! Events the executor sends back while it runs a workflow, each tagged with its run id.

use crate::cache::CallRecord;
use crate::graph::document::NodeId;
use crate::image::RgbImage;
use crate::sampling::stats::SamplerStats;
use std::path::PathBuf;
use std::sync::Arc;

/// Identifies one run; events of older runs can be told apart and dropped.
pub type RunId = u64;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Cancelled,
    Failed,
}

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

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    RunStarted {
        run_id: RunId,
        /// Nodes in execution order.
        order: Vec<NodeId>,
    },
    NodeStarted {
        run_id: RunId,
        node: NodeId,
    },
    /// A node finished; `reused` means its memoized outputs were taken (node reuse).
    NodeFinished {
        run_id: RunId,
        node: NodeId,
        ms: f64,
        reused: bool,
    },
    Step {
        run_id: RunId,
        node: NodeId,
        step: StepProgress,
    },
    /// A sampler's statistics for the run it just finished (sent by the Sampler, and again by
    /// each Detailed Stats node showing them).
    Stats {
        run_id: RunId,
        node: NodeId,
        stats: Arc<SamplerStats>,
    },
    /// A node wrote a file (e.g. Save Image).
    FileWritten {
        run_id: RunId,
        node: NodeId,
        path: PathBuf,
    },
    /// A node (or, with `node: None`, the workflow as a whole) failed.
    NodeError {
        run_id: RunId,
        node: Option<NodeId>,
        message: String,
    },
    RunFinished {
        run_id: RunId,
        outcome: RunOutcome,
        ms: f64,
    },
}

impl Event {
    pub fn run_id(&self) -> RunId {
        match self {
            Event::RunStarted { run_id, .. }
            | Event::NodeStarted { run_id, .. }
            | Event::NodeFinished { run_id, .. }
            | Event::Step { run_id, .. }
            | Event::Stats { run_id, .. }
            | Event::FileWritten { run_id, .. }
            | Event::NodeError { run_id, .. }
            | Event::RunFinished { run_id, .. } => *run_id,
        }
    }
}
