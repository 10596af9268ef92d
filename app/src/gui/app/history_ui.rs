//! The editor's side of the comparison view and the run history: keeping what a run finished,
//! the history window (open an entry, compare two, restore a workflow, delete), and opening
//! the view from a Compare node.

use super::{EditorApp, Pending};
use crate::gui::body::SAMPLER;
use crate::gui::compare_view::model::ViewData;
use crate::gui::compare_view::{self, Source};
use crate::gui::history::EntryKind;
use crate::gui::runner::Finished;
use cachedit_nodes::graph::document::NodeId;
use cachedit_nodes::image::png_io::read_png;
use std::sync::Arc;

/// The key a node body sets (egui temp data) to ask for the comparison view of its node.
pub const OPEN_COMPARE_VIEW: &str = "open-compare-view";

impl EditorApp {
    /// What the view and the history call a node's results: `file · "title" (Compare 4)`.
    fn result_title(&self, node: NodeId) -> String {
        let wf = self
            .runner
            .last_run
            .as_ref()
            .unwrap_or_else(|| self.doc.workflow());
        format!("{} · {}", self.doc.display_name(), wf.describe(node))
    }

    /// Opens the comparison view on a Compare or Sweep node.
    pub fn open_compare_view(&mut self, node: NodeId) {
        self.compare_view.open_live(node);
        let title = self.result_title(node);
        self.compare_view.sync(&self.runner, &title);
    }

    /// Opens history entries in the view: one, or two merged side by side.
    pub fn open_history(&mut self, ids: &[String]) -> Result<(), String> {
        let mut views = ids.iter().map(|id| self.history.load(id));
        let data = match (views.next(), views.next()) {
            (Some(a), None) => a?,
            (Some(a), Some(b)) => ViewData::merge(a?, b?),
            _ => return Err("pick one or two history entries".into()),
        };
        self.compare_view
            .open_data(data, Source::History(ids.to_vec()));
        Ok(())
    }

    /// Opens the view on the workflow's first Compare or Sweep node (empty when it has none).
    pub(super) fn open_first_comparison(&mut self) {
        let compare = self
            .doc
            .workflow()
            .nodes
            .iter()
            .find(|n| n.kind == crate::gui::body::COMPARE || n.kind == crate::gui::body::SWEEP)
            .map(|n| n.id);
        match compare {
            Some(id) => self.open_compare_view(id),
            None => self.compare_view.open = true,
        }
    }

    /// Keeps what the last run finished in the history (once the run is over, so that the
    /// Sampler's saved image exists).
    pub(super) fn record_finished(&mut self) {
        if self.history.poll() {
            self.history_picked
                .retain(|id| self.history.entries.iter().any(|e| &e.id == id));
        }
        if self.runner.running || self.runner.finished.is_empty() {
            return;
        }
        let Some(wf) = self.runner.last_run.clone() else {
            self.runner.finished.clear();
            return;
        };
        for item in std::mem::take(&mut self.runner.finished) {
            let (node, kind) = match item {
                Finished::Comparison(n) => (n, EntryKind::Comparison),
                Finished::Sampler(n) => (n, EntryKind::Sampler),
            };
            let title = self.result_title(node);
            let data = match kind {
                EntryKind::Comparison => self
                    .runner
                    .comparisons
                    .get(&node)
                    .map(|c| ViewData::from_comparison(&title, c)),
                EntryKind::Sampler => {
                    // Only the Sampler itself, not the Detailed Stats that showed its stats.
                    if wf.node(node).is_none_or(|n| n.kind != SAMPLER) {
                        continue;
                    }
                    let saved = wf
                        .links
                        .iter()
                        .filter(|l| l.from.node == node && l.from.port == "image")
                        .find_map(|l| self.runner.files.get(&l.to.node))
                        .and_then(|p| read_png(p).ok())
                        .map(Arc::new);
                    let image = saved.or_else(|| self.runner.previews.get(&node).cloned());
                    self.runner
                        .stats
                        .get(&node)
                        .and_then(|s| ViewData::from_sampler(&title, s, image))
                }
            };
            if let Some(data) = data {
                self.history.record(&data, kind, &wf);
            }
        }
    }

    /// The run-history window.
    pub(super) fn history_window(&mut self, ctx: &egui::Context) {
        if !self.history_open {
            return;
        }
        let mut open = true;
        let mut action = None;
        egui::Window::new("Run history")
            .id(egui::Id::new("history-window"))
            .open(&mut open)
            .default_size([560.0, 420.0])
            .show(ctx, |ui| {
                ui.weak(format!(
                    "Every finished comparison and cached Sampler run, newest first; the last {} \
                     are kept in {}.",
                    crate::gui::history::MAX_ENTRIES,
                    self.history.dir().display()
                ));
                if let Some(p) = &self.history.problem {
                    ui.colored_label(self.theme.colors.error.color(), p);
                }
                let picked = self.history_picked.len();
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(picked == 2, egui::Button::new("Compare the two ticked"))
                        .on_hover_text("tick two entries: their cells side by side in one view")
                        .clicked()
                    {
                        action = Some(HistoryAction::Compare(self.history_picked.clone()));
                    }
                    ui.weak(format!("{picked} ticked"));
                });
                ui.separator();
                if self.history.entries.is_empty() {
                    ui.weak("nothing yet: run a Compare node, or a Sampler with a cache");
                }
                egui::ScrollArea::vertical().show(ui, |ui| {
                    for (n, entry) in self.history.entries.iter().enumerate() {
                        ui.horizontal(|ui| {
                            let mut ticked = self.history_picked.contains(&entry.id);
                            let tick = ui.checkbox(&mut ticked, "");
                            tick.widget_info(|| {
                                egui::WidgetInfo::selected(
                                    egui::WidgetType::Checkbox,
                                    true,
                                    ticked,
                                    format!("tick entry {}", n + 1),
                                )
                            });
                            if tick.changed() {
                                action = Some(HistoryAction::Tick(entry.id.clone(), ticked));
                            }
                            ui.vertical(|ui| {
                                ui.label(format!(
                                    "{} · {}",
                                    when(entry.meta.created_unix_ms),
                                    entry.meta.title
                                ));
                                ui.weak(entry.summary());
                            });
                            if ui.button("Open").clicked() {
                                action = Some(HistoryAction::Compare(vec![entry.id.clone()]));
                            }
                            if ui
                                .button("Workflow")
                                .on_hover_text(
                                    "open the workflow that made it, as an untitled copy",
                                )
                                .clicked()
                            {
                                action = Some(HistoryAction::Workflow(entry.id.clone()));
                            }
                            if ui.button("Delete").clicked() {
                                action = Some(HistoryAction::Delete(entry.id.clone()));
                            }
                        });
                    }
                });
            });
        self.history_open = open;
        match action {
            Some(HistoryAction::Tick(id, on)) => {
                self.history_picked.retain(|x| x != &id);
                if on {
                    self.history_picked.push(id);
                    // Two at most: ticking a third unticks the oldest tick.
                    while self.history_picked.len() > 2 {
                        self.history_picked.remove(0);
                    }
                }
            }
            Some(HistoryAction::Compare(ids)) => {
                if let Err(e) = self.open_history(&ids) {
                    self.toasts.error(e);
                }
            }
            Some(HistoryAction::Workflow(id)) => {
                let path = self.history.workflow_path(&id);
                self.guard_unsaved(Pending::Open(path));
            }
            Some(HistoryAction::Delete(id)) => {
                if let Err(e) = self.history.remove(&id) {
                    self.toasts.error(e);
                }
                self.history_picked.retain(|x| x != &id);
            }
            None => {}
        }
    }

    /// The comparison view's window, following its node while it runs.
    pub(super) fn compare_window(&mut self, ctx: &egui::Context) {
        let asked =
            ctx.data_mut(|d| d.remove_temp::<Option<NodeId>>(egui::Id::new(OPEN_COMPARE_VIEW)));
        if let Some(node) = asked.flatten() {
            self.open_compare_view(node);
        }
        let status = match self.compare_view.source {
            Some(Source::Live(node)) => {
                let title = self.result_title(node);
                self.compare_view.sync(&self.runner, &title);
                compare_view::live_status(&self.runner, node, self.compare_view.data.as_ref())
            }
            _ => None,
        };
        self.compare_view.show(ctx, &self.theme, status);
    }
}

enum HistoryAction {
    Tick(String, bool),
    Compare(Vec<String>),
    Workflow(String),
    Delete(String),
}

/// A creation time as UTC `YYYY-MM-DD HH:MM` (no time-zone database here).
fn when(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(super::when(0), "1970-01-01 00:00 UTC");
        // 2026-12-02 19:24:52 UTC.
        assert_eq!(super::when(1_796_239_492_000), "2026-12-02 19:24 UTC");
        assert_eq!(super::when(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
