//! stats.json: what a headless run reports, collected from the executor's events.

use cachedit_nodes::exec::{Event, RunOutcome};
use cachedit_nodes::graph::document::{NodeId, Workflow};
use cachedit_nodes::sampling::stats::SamplerStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub workflow: String,
    pub outcome: String,
    pub total_ms: f64,
    pub nodes: Vec<NodeReport>,
    pub files: Vec<PathBuf>,
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct NodeReport {
    pub id: u64,
    pub kind: String,
    pub title: Option<String>,
    pub ms: f64,
    pub reused: bool,
    /// Per-step times (samplers only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// A sampler's statistics: every transformer call and the step-cache summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<SamplerStats>,
    /// A Compare node's table: one row per config, the reference first (PSNR of identical
    /// images, infinite, is written as null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Vec<cachedit_nodes::compare::table::Row>>,
    /// What a Detailed Stats node showed (the text the CLI printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// What the node said about its result (Load Model: what it loaded, the memory it holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub index: usize,
    pub timestep: f64,
    pub ms: f64,
}

/// Whether `node` is a Detailed Stats node (its stats are printed, not stored twice).
pub fn is_detailed_stats(wf: &Workflow, node: NodeId) -> bool {
    wf.node(node).is_some_and(|n| n.kind == "DetailedStats")
}

impl RunReport {
    pub fn new(source: String) -> Self {
        RunReport {
            workflow: source,
            outcome: "running".into(),
            ..RunReport::default()
        }
    }

    fn node<'a>(
        by_id: &'a mut BTreeMap<NodeId, NodeReport>,
        wf: &Workflow,
        id: NodeId,
    ) -> &'a mut NodeReport {
        by_id.entry(id).or_insert_with(|| {
            let node = wf.node(id);
            NodeReport {
                id: id.0,
                kind: node.map(|n| n.kind.clone()).unwrap_or_default(),
                title: node.and_then(|n| n.title.clone()),
                ..NodeReport::default()
            }
        })
    }

    /// Folds all events of one run into the report, in execution order.
    pub fn from_events(source: String, wf: &Workflow, events: &[Event]) -> Self {
        let mut report = RunReport::new(source);
        let mut by_id: BTreeMap<NodeId, NodeReport> = BTreeMap::new();
        let mut order: Vec<NodeId> = Vec::new();
        for event in events {
            match event {
                Event::RunStarted { order: o, .. } => order = o.clone(),
                Event::NodeFinished {
                    node, ms, reused, ..
                } => {
                    let n = Self::node(&mut by_id, wf, *node);
                    n.ms = *ms;
                    n.reused = *reused;
                }
                Event::Step { node, step, .. } => {
                    Self::node(&mut by_id, wf, *node).steps.push(StepReport {
                        index: step.index,
                        timestep: step.timestep,
                        ms: step.ms,
                    });
                }
                Event::Stats { node, stats, .. } => {
                    let n = Self::node(&mut by_id, wf, *node);
                    if is_detailed_stats(wf, *node) {
                        n.summary = Some(stats.summary_text());
                    } else {
                        n.stats = Some(SamplerStats::clone(stats));
                    }
                }
                Event::FileWritten { path, .. } => report.files.push(path.clone()),
                Event::NodeError { message, .. } => report.errors.push(message.clone()),
                Event::RunFinished { outcome, ms, .. } => {
                    report.total_ms = *ms;
                    report.outcome = match outcome {
                        RunOutcome::Completed => "completed",
                        RunOutcome::Cancelled => "cancelled",
                        RunOutcome::Failed => "failed",
                    }
                    .into();
                }
                Event::Comparison {
                    node, comparison, ..
                } => {
                    Self::node(&mut by_id, wf, *node).comparison =
                        Some(cachedit_nodes::compare::table::rows(comparison));
                }
                Event::Info { node, text, .. } => {
                    Self::node(&mut by_id, wf, *node).info = Some(text.clone());
                }
                Event::NodeStarted { .. }
                | Event::Measure { .. }
                | Event::CompareProgress { .. } => {}
            }
        }
        for id in order {
            if let Some(n) = by_id.remove(&id) {
                report.nodes.push(n);
            }
        }
        report.nodes.extend(by_id.into_values());
        report
    }
}
