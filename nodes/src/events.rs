//! Events the executor sends back while it runs a workflow, each tagged with its run id.

use crate::document::NodeId;
pub use crate::sampling::progress::{MeasurePhase, MeasureProgress, StepProgress};
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

impl MeasureProgress {
    /// Share of the node's whole work done, 0 to 1.
    pub fn fraction(&self) -> f32 {
        let total = (2 * self.rounds * self.steps).max(1);
        (self.runs_done * self.steps + self.step) as f32 / total as f32
    }

    /// What a progress bar says: `baseline round 2/3, step 12/25`.
    pub fn label(&self) -> String {
        let phase = match self.phase {
            MeasurePhase::Baseline => "baseline",
            MeasurePhase::Cached => "cached",
        };
        format!(
            "{phase} round {}/{}, step {}/{}",
            self.round, self.rounds, self.step, self.steps
        )
    }
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
    /// What a node wants the user to know about its result (Load Model: what it loaded and
    /// the memory it holds).
    Info {
        run_id: RunId,
        node: NodeId,
        text: String,
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
    /// A Sampler timing a baseline: where its interleaved rounds stand.
    Measure {
        run_id: RunId,
        node: NodeId,
        progress: MeasureProgress,
    },
    /// A sampler's statistics for the run it just finished (sent by the Sampler, and again by
    /// each Detailed Stats node showing them).
    Stats {
        run_id: RunId,
        node: NodeId,
        stats: Arc<SamplerStats>,
    },
    /// A Compare node: where its runs stand.
    CompareProgress {
        run_id: RunId,
        node: NodeId,
        progress: crate::compare::CompareProgress,
    },
    /// A Compare node's comparison so far (after each finished sample; `finished` on the last).
    Comparison {
        run_id: RunId,
        node: NodeId,
        comparison: Arc<crate::compare::Comparison>,
        finished: bool,
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
            | Event::Info { run_id, .. }
            | Event::Step { run_id, .. }
            | Event::Measure { run_id, .. }
            | Event::Stats { run_id, .. }
            | Event::Comparison { run_id, .. }
            | Event::CompareProgress { run_id, .. }
            | Event::FileWritten { run_id, .. }
            | Event::NodeError { run_id, .. }
            | Event::RunFinished { run_id, .. } => *run_id,
        }
    }
}
