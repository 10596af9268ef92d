//! Runs the document on the executor thread and keeps what its events said, per node.

use cachedit_nodes::exec::events::{Event, MeasureProgress, RunId, RunOutcome, StepProgress};
use cachedit_nodes::exec::executor::{ExecConfig, Executor};
use cachedit_nodes::graph::document::{NodeId, Workflow};
use cachedit_nodes::image::RgbImage;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::sampling::stats::SamplerStats;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a node stands in the latest run.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeStatus {
    /// In the run's order, not started yet.
    Waiting,
    Running,
    /// Finished; `reused` = node reuse took its memoized outputs.
    Done {
        ms: f64,
        reused: bool,
    },
    Failed(String),
    Cancelled,
}

/// Live steps of one sampler node in the current run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSteps {
    pub steps: Vec<StepProgress>,
    pub total: usize,
}

/// Something the user should be told about (shown as a notification).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// The executor handle plus the latest run's state.
pub struct Runner {
    exec: Option<Executor>,
    /// Why the executor could not start, if it could not.
    pub start_error: Option<String>,
    /// The run whose events are shown; events of older runs are dropped.
    pub current: Option<RunId>,
    pub running: bool,
    pub status: HashMap<NodeId, NodeStatus>,
    pub live: HashMap<NodeId, LiveSteps>,
    /// Final stats per node (the Sampler and the Detailed Stats nodes that showed them).
    pub stats: HashMap<NodeId, Arc<SamplerStats>>,
    /// Nodes whose `stats` are from an earlier run: marked when a run starts, cleared when the
    /// run sends the node's new stats or reuses its outputs (then the old stats are current).
    pub stale: HashSet<NodeId>,
    /// Where a Sampler timing a baseline stands in its interleaved rounds, in the latest run.
    pub measure: HashMap<NodeId, MeasureProgress>,
    /// The latest comparison per Compare node (filled in as its samples finish).
    pub comparisons: HashMap<NodeId, Arc<cachedit_nodes::compare::Comparison>>,
    /// Where a running Compare node stands.
    pub compare_progress: HashMap<NodeId, cachedit_nodes::compare::CompareProgress>,
    /// A node's last word on its result (Load Model: what it loaded); kept while the node
    /// is reused.
    pub info: HashMap<NodeId, String>,
    /// The latest step preview per sampler node.
    pub previews: HashMap<NodeId, Arc<RgbImage>>,
    /// Files written per node in the latest run.
    pub files: HashMap<NodeId, PathBuf>,
    pub outcome: Option<(RunOutcome, f64)>,
    /// The workflow of the latest run (to tell what changed since).
    pub last_run: Option<Workflow>,
    /// What finished since the editor last looked, for the run history (drained by it).
    pub finished: Vec<Finished>,
}

/// Something the run history keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// A Compare or Sweep node's whole comparison.
    Comparison(NodeId),
    /// A Sampler that ran with a cache.
    Sampler(NodeId),
}

impl Runner {
    pub fn new(output_dir: PathBuf) -> Self {
        let (exec, start_error) =
            match Executor::spawn(Registry::builtin(), ExecConfig { output_dir }) {
                Ok(e) => (Some(e), None),
                Err(e) => (None, Some(e.to_string())),
            };
        Runner {
            exec,
            start_error,
            current: None,
            running: false,
            status: HashMap::new(),
            live: HashMap::new(),
            stats: HashMap::new(),
            stale: HashSet::new(),
            measure: HashMap::new(),
            comparisons: HashMap::new(),
            compare_progress: HashMap::new(),
            info: HashMap::new(),
            previews: HashMap::new(),
            files: HashMap::new(),
            outcome: None,
            last_run: None,
            finished: Vec::new(),
        }
    }

    /// Sends a snapshot of the workflow to the executor; the UI does not wait for it.
    pub fn start(&mut self, wf: &Workflow) -> Result<RunId, String> {
        let exec = self
            .exec
            .as_ref()
            .ok_or_else(|| self.start_error.clone().unwrap_or_default())?;
        if self.running {
            exec.cancel();
        }
        let run_id = exec.run(wf.clone()).map_err(|e| e.to_string())?;
        self.current = Some(run_id);
        self.running = true;
        self.status.clear();
        self.live.clear();
        self.measure.clear();
        self.compare_progress.clear();
        self.stale = self.stats.keys().copied().collect();
        self.stale.extend(self.comparisons.keys().copied());
        self.files.clear();
        self.outcome = None;
        self.last_run = Some(wf.clone());
        Ok(run_id)
    }

    /// Asks the running run to stop between steps.
    pub fn cancel(&self) {
        if let Some(exec) = &self.exec {
            if self.running {
                exec.cancel();
            }
        }
    }

    /// Drains the events that arrived; returns what to notify the user of.
    pub fn poll(&mut self) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(exec) = &self.exec else {
            return notices;
        };
        let events: Vec<Event> = exec.events().try_iter().collect();
        for event in events {
            if Some(event.run_id()) != self.current {
                continue; // a stale run's event
            }
            self.apply(event, &mut notices);
        }
        notices
    }

    /// Takes one event of the current run into the state (what [`Self::poll`] does with each).
    pub fn apply(&mut self, event: Event, notices: &mut Vec<Notice>) {
        match event {
            Event::RunStarted { order, .. } => {
                for id in order {
                    self.status.insert(id, NodeStatus::Waiting);
                }
            }
            Event::NodeStarted { node, .. } => {
                self.status.insert(node, NodeStatus::Running);
            }
            Event::NodeFinished {
                node, ms, reused, ..
            } => {
                self.measure.remove(&node);
                if reused {
                    // Node reuse: the outputs, and so the stats, are those of the last run.
                    self.stale.remove(&node);
                }
                self.status.insert(node, NodeStatus::Done { ms, reused });
            }
            Event::Step { node, step, .. } => {
                if let Some(p) = &step.preview {
                    self.previews.insert(node, p.clone());
                }
                let live = self.live.entry(node).or_default();
                live.total = step.total;
                live.steps.push(step);
            }
            Event::Measure { node, progress, .. } => {
                self.measure.insert(node, progress);
            }
            Event::Stats { node, stats, .. } => {
                self.stale.remove(&node);
                let cached = stats
                    .summary
                    .as_ref()
                    .is_some_and(|s| s.signature != cachedit_nodes::cache::NO_CACHE);
                if cached && !self.finished.contains(&Finished::Sampler(node)) {
                    self.finished.push(Finished::Sampler(node));
                }
                self.stats.insert(node, stats);
            }
            Event::CompareProgress { node, progress, .. } => {
                self.compare_progress.insert(node, progress);
            }
            Event::Comparison {
                node,
                comparison,
                finished,
                ..
            } => {
                self.stale.remove(&node);
                if finished {
                    self.compare_progress.remove(&node);
                    self.finished.push(Finished::Comparison(node));
                }
                // The grid shows on the node as its samples finish.
                if let Ok(grid) = cachedit_nodes::compare::labels::plain_grid(&comparison) {
                    self.previews.insert(node, Arc::new(grid));
                }
                self.comparisons.insert(node, comparison);
            }
            Event::Info { node, text, .. } => {
                self.info.insert(node, text);
            }
            Event::FileWritten { node, path, .. } => {
                self.files.insert(node, path);
            }
            Event::NodeError { node, message, .. } => {
                let cancelled = message.ends_with("cancelled");
                if let Some(id) = node {
                    self.compare_progress.remove(&id);
                }
                // The executor's message already names the node (`Sampler #2: ...`).
                let text = message.clone();
                if let Some(id) = node {
                    let status = if cancelled {
                        NodeStatus::Cancelled
                    } else {
                        NodeStatus::Failed(message)
                    };
                    self.status.insert(id, status);
                }
                if !cancelled {
                    notices.push(Notice { error: true, text });
                }
            }
            Event::RunFinished { outcome, ms, .. } => {
                self.running = false;
                self.measure.clear();
                // A comparison that did not finish is no longer running either.
                self.compare_progress.clear();
                self.outcome = Some((outcome, ms));
                for s in self.status.values_mut() {
                    if matches!(s, NodeStatus::Running) && outcome == RunOutcome::Cancelled {
                        *s = NodeStatus::Cancelled;
                    }
                }
                let text = match outcome {
                    RunOutcome::Completed => format!("Run finished in {:.0} ms", ms),
                    RunOutcome::Cancelled => "Run cancelled".to_string(),
                    RunOutcome::Failed => "Run failed".to_string(),
                };
                notices.push(Notice {
                    error: outcome == RunOutcome::Failed,
                    text,
                });
            }
        }
    }

    /// The sampler feeding a node's `stats` input (for Detailed Stats), or the node itself.
    pub fn stats_source(wf: &Workflow, node: NodeId) -> NodeId {
        wf.links
            .iter()
            .find(|l| l.to.node == node && l.to.port == "stats")
            .map_or(node, |l| l.from.node)
    }

    /// Stats to show for a node: its own final stats, or those of its source sampler.
    pub fn stats_for(&self, wf: &Workflow, node: NodeId) -> Option<&Arc<SamplerStats>> {
        self.stats_shown(wf, node).map(|(stats, _)| stats)
    }

    /// Like [`Self::stats_for`], preferring stats of the latest run, with whether the ones
    /// given are from an earlier run (stale).
    pub fn stats_shown(&self, wf: &Workflow, node: NodeId) -> Option<(&Arc<SamplerStats>, bool)> {
        let candidates = [node, Self::stats_source(wf, node)];
        let current = candidates
            .iter()
            .filter(|id| !self.stale.contains(id))
            .find_map(|id| self.stats.get(id));
        match current {
            Some(stats) => Some((stats, false)),
            None => candidates
                .iter()
                .find_map(|id| self.stats.get(id))
                .map(|stats| (stats, true)),
        }
    }
}
