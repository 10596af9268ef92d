//! What a running node can see and do: its ids, the event channel, cancellation, output folder.

use super::NodeError;
use crate::document::NodeId;
use crate::events::{Event, MeasureProgress, RunId, StepProgress};
use crate::sampling::stats::SamplerStats;
use crossbeam_channel::Sender;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct NodeContext<'a> {
    pub run_id: RunId,
    pub node: NodeId,
    /// Folder where output nodes write files.
    pub output_dir: &'a Path,
    /// The workflow being run, as `.ron` text (embedded in saved images).
    pub workflow_ron: &'a str,
    pub(crate) events: &'a Sender<Event>,
    pub(crate) cancel: &'a AtomicBool,
}

impl NodeContext<'_> {
    /// Sends an event; a closed channel (nobody listening) is not an error.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A line about the node's result, shown on the node and by the CLI.
    pub fn info(&self, text: impl Into<String>) {
        self.emit(Event::Info {
            run_id: self.run_id,
            node: self.node,
            text: text.into(),
        });
    }

    pub fn step(&self, step: StepProgress) {
        self.emit(Event::Step {
            run_id: self.run_id,
            node: self.node,
            step,
        });
    }

    pub fn measure(&self, progress: MeasureProgress) {
        self.emit(Event::Measure {
            run_id: self.run_id,
            node: self.node,
            progress,
        });
    }

    pub fn stats(&self, stats: Arc<SamplerStats>) {
        self.emit(Event::Stats {
            run_id: self.run_id,
            node: self.node,
            stats,
        });
    }

    pub fn compare_progress(&self, progress: crate::compare::CompareProgress) {
        self.emit(Event::CompareProgress {
            run_id: self.run_id,
            node: self.node,
            progress,
        });
    }

    pub fn comparison(&self, comparison: Arc<crate::compare::Comparison>, finished: bool) {
        self.emit(Event::Comparison {
            run_id: self.run_id,
            node: self.node,
            comparison,
            finished,
        });
    }

    pub fn file_written(&self, path: &Path) {
        self.emit(Event::FileWritten {
            run_id: self.run_id,
            node: self.node,
            path: path.to_path_buf(),
        });
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancel was asked for; long nodes call it between steps.
    pub fn check_cancel(&self) -> Result<(), NodeError> {
        if self.is_cancelled() {
            Err(NodeError::Cancelled)
        } else {
            Ok(())
        }
    }
}
