//! A node's body on the canvas: run status, params, and per-kind views (progress, image,
//! schedule preview, Detailed Stats).

use super::params::{self, ParamChange};
use super::runner::{NodeStatus, Runner};
use super::stats_view::{self, BaselineSetting, StatsInput};
use super::theme::Theme;
use cachedit_nodes::cache::{schedule_preview, DiffStats, SchedulePreview, Strategy};
use cachedit_nodes::graph::document::{NodeId, Workflow};
use cachedit_nodes::graph::validate::resolve_params;
use cachedit_nodes::kinds::cache_config::config_from_params;
use cachedit_nodes::registry::Registry;
use egui::Ui;
use std::collections::HashMap;

/// Kind names the editor gives a special body.
pub const SAMPLER: &str = "Sampler";
pub const DETAILED_STATS: &str = "DetailedStats";
pub const CACHE_CONFIG: &str = "CacheDitAdvancedConfig";
pub const COMPARE: &str = "Compare";
pub const SWEEP: &str = "Sweep";

/// What a node body may look at.
pub struct BodyContext<'a> {
    pub wf: &'a Workflow,
    pub registry: &'a Registry,
    pub theme: &'a Theme,
    pub runner: &'a Runner,
    /// The latest image per node (Sampler, Save Image).
    pub images: &'a HashMap<NodeId, egui::TextureHandle>,
    /// Hide wall-clock numbers (snapshot tests).
    pub hide_times: bool,
}

/// The node linked into `node.port`, if any.
fn upstream(wf: &Workflow, node: NodeId, port: &str) -> Option<NodeId> {
    wf.links
        .iter()
        .find(|l| l.to.node == node && l.to.port == port)
        .map(|l| l.from.node)
}

/// The samplers fed by a cache config node.
fn downstream_samplers(wf: &Workflow, config: NodeId) -> Vec<NodeId> {
    wf.links
        .iter()
        .filter(|l| l.from.node == config && l.to.port == "cache")
        .map(|l| l.to.node)
        .collect()
}

/// The counter schedule a config node gives a sampler's step count, and its threshold.
pub fn preview_for(
    wf: &Workflow,
    registry: &Registry,
    config: NodeId,
    sampler: NodeId,
) -> Option<(SchedulePreview, f64)> {
    let cnode = wf.node(config)?;
    let cparams = resolve_params(cnode, registry.spec(&cnode.kind)?).ok()?;
    let c = config_from_params(&cparams).ok()?;
    let snode = wf.node(sampler)?;
    let sparams = resolve_params(snode, registry.spec(&snode.kind)?).ok()?;
    let steps = usize::try_from(sparams.int("steps").ok()?).ok()?;
    let threshold = c.db.residual_diff_threshold;
    Some((schedule_preview(&c, steps).ok()?, threshold))
}

/// The strategy a config node is set to.
fn strategy_of(wf: &Workflow, registry: &Registry, config: NodeId) -> Option<Strategy> {
    let node = wf.node(config)?;
    let params = resolve_params(node, registry.spec(&node.kind)?).ok()?;
    Some(config_from_params(&params).ok()?.strategy)
}

/// Diff percentiles of the last run of the samplers a config feeds.
fn diffs_for_config(bcx: &BodyContext<'_>, config: NodeId) -> Option<DiffStats> {
    downstream_samplers(bcx.wf, config)
        .into_iter()
        .find_map(|s| bcx.runner.stats.get(&s)?.summary.as_ref()?.diffs.clone())
}

fn status_line(ui: &mut Ui, bcx: &BodyContext<'_>, id: NodeId, kind: &str) {
    let c = &bcx.theme.colors;
    match bcx.runner.status.get(&id) {
        Some(NodeStatus::Waiting) => {
            ui.weak("waiting");
        }
        Some(NodeStatus::Running) => {
            let live = bcx.runner.live.get(&id);
            if let Some(p) = bcx.runner.measure.get(&id) {
                ui.add(
                    egui::ProgressBar::new(p.fraction())
                        .desired_width(200.0)
                        .fill(c.running.color())
                        .text(p.label()),
                );
                return;
            }
            match live {
                Some(l) if l.total > 0 => {
                    let done = l.steps.len();
                    ui.add(
                        egui::ProgressBar::new(done as f32 / l.total as f32)
                            .desired_width(200.0)
                            .fill(c.running.color())
                            .text(format!("step {done}/{}", l.total)),
                    );
                }
                _ => {
                    ui.add(
                        egui::ProgressBar::new(0.0)
                            .desired_width(200.0)
                            .fill(c.running.color())
                            .text("running…"),
                    );
                }
            }
        }
        Some(NodeStatus::Done { ms, reused }) => {
            let text = match (*reused, kind) {
                (true, "LoadModel") => "reused: model already loaded".to_string(),
                (true, _) => "reused: inputs unchanged".to_string(),
                (false, _) if bcx.hide_times => "done".to_string(),
                (false, _) => format!("done in {ms:.0} ms"),
            };
            ui.colored_label(c.ok.color(), text);
            if let Some(info) = bcx.runner.info.get(&id) {
                ui.add(egui::Label::new(egui::RichText::new(info).small()).wrap());
            }
        }
        Some(NodeStatus::Failed(message)) => {
            ui.colored_label(c.error.color(), message);
        }
        Some(NodeStatus::Cancelled) => {
            ui.colored_label(c.warning.color(), "cancelled");
        }
        None => {}
    }
}

/// How a Sampler is set to time a baseline (`baseline`, `baseline_rounds`, a linked cache).
fn baseline_setting(bcx: &BodyContext<'_>, sampler: NodeId) -> BaselineSetting {
    let params = bcx
        .wf
        .node(sampler)
        .and_then(|n| resolve_params(n, bcx.registry.spec(&n.kind)?).ok());
    let Some(params) = params else {
        return BaselineSetting::Off;
    };
    match (params.boolean("baseline"), params.int("baseline_rounds")) {
        (Ok(true), _) if upstream(bcx.wf, sampler, "cache").is_none() => BaselineSetting::NoCache,
        (Ok(true), Ok(rounds)) => BaselineSetting::On {
            rounds: usize::try_from(rounds).unwrap_or(1),
        },
        _ => BaselineSetting::Off,
    }
}

/// The whole body of node `id`; returns the param changes the user made.
pub fn node_body(ui: &mut Ui, bcx: &BodyContext<'_>, id: NodeId) -> Vec<ParamChange> {
    let Some(node) = bcx.wf.node(id) else {
        return Vec::new();
    };
    let Some(spec) = bcx.registry.spec(&node.kind) else {
        ui.colored_label(
            bcx.theme.colors.error.color(),
            format!("unknown node kind {:?}", node.kind),
        );
        return Vec::new();
    };
    let mut changes = Vec::new();
    ui.vertical(|ui| {
        ui.set_max_width(bcx.theme.spacing.plot_size[0] + 40.0);
        status_line(ui, bcx, id, spec.name);
        let diffs = if spec.name == CACHE_CONFIG {
            diffs_for_config(bcx, id)
        } else {
            None
        };
        changes = params::params_ui(ui, node, spec);
        if let Some(d) = &diffs {
            params::threshold_ui(ui, bcx.theme, node, spec, d);
        }
        match spec.name {
            CACHE_CONFIG => {
                if let Some(sampler) = downstream_samplers(bcx.wf, id).first() {
                    if let Some((preview, _)) = preview_for(bcx.wf, bcx.registry, id, *sampler) {
                        ui.label("schedule preview");
                        let input = StatsInput {
                            preview: Some(&preview),
                            ..StatsInput::default()
                        };
                        stats_view::timeline(ui, bcx.theme, &input);
                        stats_view::totals(ui, bcx.theme, &input);
                    }
                } else {
                    ui.weak("link `cache` to a Sampler to preview its schedule");
                }
            }
            DETAILED_STATS => {
                let sampler = upstream(bcx.wf, id, "stats");
                let live = sampler.and_then(|s| bcx.runner.live.get(&s));
                let shown = bcx.runner.stats_shown(bcx.wf, id);
                let preview = sampler.and_then(|s| {
                    let config = upstream(bcx.wf, s, "cache")?;
                    preview_for(bcx.wf, bcx.registry, config, s)
                });
                let input = StatsInput {
                    live: live.map(|l| l.steps.as_slice()),
                    live_total: live.map_or(0, |l| l.total),
                    stats: shown.map(|(s, _)| s.as_ref()),
                    stale: shown.is_some_and(|(_, stale)| stale),
                    measuring: sampler.and_then(|s| bcx.runner.measure.get(&s).copied()),
                    baseline: sampler.map_or(BaselineSetting::Off, |s| baseline_setting(bcx, s)),
                    preview: preview.as_ref().map(|(p, _)| p),
                    threshold: preview.as_ref().map(|(_, t)| *t),
                    strategy: sampler.and_then(|s| {
                        let config = upstream(bcx.wf, s, "cache")?;
                        strategy_of(bcx.wf, bcx.registry, config)
                    }),
                    hide_times: bcx.hide_times,
                };
                let plot_id = ui.id().with(("stats", id.0));
                stats_view::show(ui, bcx.theme, &input, plot_id);
            }
            COMPARE | SWEEP => compare_body(ui, bcx, id),
            _ => {}
        }
        if let Some(tex) = bcx.images.get(&id) {
            let size = tex.size_vec2();
            let scale = (160.0 / size.x.max(1.0)).min(4.0);
            ui.image((tex.id(), size * scale));
        }
    });
    changes
}

/// A Compare node's progress and its table (the reference first, then each config).
fn compare_body(ui: &mut egui::Ui, bcx: &BodyContext, id: NodeId) {
    if let Some(p) = bcx.runner.compare_progress.get(&id) {
        let done = p.runs_done * p.steps + p.step;
        let total = (p.runs_total * p.steps).max(1);
        let who = match p.subject {
            cachedit_nodes::compare::Subject::Reference => "reference".to_string(),
            cachedit_nodes::compare::Subject::Cell(i) => format!("config {}", i + 1),
        };
        ui.add(
            egui::ProgressBar::new(done as f32 / total as f32).text(format!(
                "sample {} · round {} · {who} · step {}/{}",
                p.sample + 1,
                p.round + 1,
                p.step,
                p.steps
            )),
        );
    }
    match bcx.runner.comparisons.get(&id) {
        Some(c) => {
            let rows = cachedit_nodes::compare::table::rows(c);
            let mut text = cachedit_nodes::compare::table::text(&rows);
            if bcx.runner.stale.contains(&id) {
                text.push_str("\n(from the previous run)");
            }
            ui.label(egui::RichText::new(text).monospace().small());
            if ui
                .button("Open comparison view")
                .on_hover_text("the images large, A/B, difference map, speed–quality scatter")
                .clicked()
            {
                ui.ctx().data_mut(|d| {
                    d.insert_temp(egui::Id::new(super::app::OPEN_COMPARE_VIEW), Some(id))
                });
            }
        }
        None => {
            ui.weak("run to compare: the reference and each config");
        }
    }
}
