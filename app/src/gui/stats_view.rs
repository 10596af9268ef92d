//! The Detailed Stats view: step timeline strip, residual diff vs threshold, step times, totals.

use super::theme::Theme;
use cachedit_nodes::cache::{
    CacheSummary, CallRecord, CfgBranch, Decision, Planned, Reason, SchedulePreview, Strategy,
};
use cachedit_nodes::exec::events::{MeasureProgress, StepProgress};
use cachedit_nodes::sampling::measure::{Measured, Verdict};
use cachedit_nodes::sampling::stats::SamplerStats;
use egui::{Color32, Rect, Sense, Ui, Vec2};
use egui_plot::{Bar, BarChart, HLine, Line, Plot, PlotPoints};

/// How the Sampler feeding the view is set to time a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaselineSetting {
    #[default]
    Off,
    /// `baseline` on, but no step cache to compare with.
    NoCache,
    On {
        rounds: usize,
    },
}

/// Opacity of statistics from an earlier run.
const STALE_OPACITY: f32 = 0.45;

/// What the view shows: a run (live or finished) and/or the schedule planned before it.
#[derive(Default)]
pub struct StatsInput<'a> {
    /// Steps that arrived so far in a live run.
    pub live: Option<&'a [StepProgress]>,
    /// Total steps of the live run.
    pub live_total: usize,
    /// The finished run's stats.
    pub stats: Option<&'a SamplerStats>,
    /// `stats` are from an earlier run than the latest (shown dimmed until the new run's steps
    /// arrive, which then take their place).
    pub stale: bool,
    /// The sampler's interleaved baseline rounds, while it measures.
    pub measuring: Option<MeasureProgress>,
    /// The sampler's `baseline` setting in the document.
    pub baseline: BaselineSetting,
    /// The counter schedule of the connected cache config, drawn before the run.
    pub preview: Option<&'a SchedulePreview>,
    /// The connected config's residual-diff threshold (adaptive strategy).
    pub threshold: Option<f64>,
    /// The connected config's strategy (`None`: no step cache on the Sampler).
    pub strategy: Option<Strategy>,
    /// Hide wall-clock numbers (snapshot tests).
    pub hide_times: bool,
}

/// One step, gathered from whichever source is present.
struct StepRow {
    ms: f64,
    calls: Vec<CallRecord>,
}

/// The finished stats to draw: the current run's, or an earlier run's until the latest run's
/// steps arrive.
fn finished<'a>(input: &StatsInput<'a>) -> Option<&'a SamplerStats> {
    let live_started = input.live.is_some_and(|l| !l.is_empty());
    input.stats.filter(|_| !(input.stale && live_started))
}

fn rows(input: &StatsInput<'_>) -> (Vec<StepRow>, usize) {
    if let Some(stats) = finished(input) {
        let total = stats.steps.len();
        let mut rows: Vec<StepRow> = stats
            .steps
            .iter()
            .map(|s| StepRow {
                ms: s.ms,
                calls: Vec::new(),
            })
            .collect();
        for c in &stats.calls {
            if let Some(r) = rows.get_mut(c.step) {
                r.calls.push(c.clone());
            }
        }
        return (rows, total);
    }
    if let Some(live) = input.live {
        let rows = live
            .iter()
            .map(|s| StepRow {
                ms: s.ms,
                calls: s.calls.clone(),
            })
            .collect();
        return (rows, input.live_total.max(live.len()));
    }
    (Vec::new(), input.preview.map_or(0, |p| p.steps.len()))
}

/// The colour of one call's cell: reused / warmup / forced / computed.
pub fn call_color(theme: &Theme, call: &CallRecord) -> Color32 {
    let c = &theme.colors;
    match (call.decision, call.reason) {
        (Decision::Reused, _) => c.reused.color(),
        (Decision::Computed, Reason::Warmup) => c.warmup.color(),
        (Decision::Computed, r) if r.is_forced() => c.forced.color(),
        (Decision::Computed, _) => c.computed.color(),
    }
}

fn planned_color(theme: &Theme, p: &Planned) -> Color32 {
    let c = &theme.colors;
    match p {
        Planned::Compute(Reason::Warmup) => c.warmup.color(),
        Planned::Compute(r) if r.is_forced() => c.forced.color(),
        Planned::Compute(_) => c.computed.color(),
        Planned::Reuse(_) => c.reused.color(),
        Planned::Indicator => c.undecided.color(),
    }
}

fn describe_call(c: &CallRecord, hide_times: bool) -> String {
    let decision = match c.decision {
        Decision::Computed => "computed",
        Decision::Reused => "reused",
    };
    let mut s = format!(
        "step {} ({}): {decision} — {}\nblocks {}/{}",
        c.step,
        c.branch.name(),
        c.reason.label(),
        c.blocks_run,
        c.blocks_total
    );
    if c.attention_reused > 0 {
        s.push_str(&format!(
            "\nattention served from the cache in {} block(s)",
            c.attention_reused
        ));
    }
    if let Some(w) = c.work {
        s.push_str(&format!("\nwork {w:.2} block-equivalents"));
    }
    if let Some(p) = &c.pattern {
        s.push_str(&format!("\nblocks {p}"));
    }
    if let Some(d) = c.diff {
        s.push_str(&format!("\nresidual diff {d:.4}"));
    }
    if let Some(t) = c.threshold {
        s.push_str(&format!("  threshold {t:.4}"));
    }
    if !hide_times {
        s.push_str(&format!("\n{:.2} ms", c.ms));
    }
    s
}

/// The step timeline strip: one cell per step and CFG branch. Hovering a cell shows its
/// numbers. Before a run it draws the planned schedule.
pub fn timeline(ui: &mut Ui, theme: &Theme, input: &StatsInput<'_>) {
    let (rows_data, total) = rows(input);
    let mut branches: Vec<CfgBranch> = rows_data
        .iter()
        .flat_map(|r| r.calls.iter().map(|c| c.branch))
        .collect();
    branches.sort();
    branches.dedup();
    let planned = rows_data.is_empty() && input.preview.is_some();
    let n_rows = branches.len().max(1);
    if total == 0 {
        ui.weak("no steps yet: run the workflow");
        return;
    }
    let [cw, ch] = theme.spacing.timeline_cell;
    let width_avail = theme.spacing.plot_size[0];
    let cw = cw.min(width_avail / total as f32).max(1.0);
    let size = Vec2::new(
        cw * total as f32,
        ch * n_rows as f32 + (n_rows - 1) as f32 * 2.0,
    );
    let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let cell = |step: usize, row: usize| {
        let min = rect.min + Vec2::new(step as f32 * cw, row as f32 * (ch + 2.0));
        Rect::from_min_size(min, Vec2::new((cw - 1.0).max(1.0), ch))
    };
    for step in 0..total {
        for row in 0..n_rows {
            let color = if planned {
                input
                    .preview
                    .and_then(|p| p.steps.get(step))
                    .map_or(theme.colors.pending.color(), |p| planned_color(theme, p))
            } else {
                rows_data
                    .get(step)
                    .and_then(|r| {
                        let branch = branches.get(row)?;
                        r.calls.iter().find(|c| c.branch == *branch)
                    })
                    .map_or(theme.colors.pending.color(), |c| call_color(theme, c))
            };
            painter.rect_filled(cell(step, row), 1.0, color);
        }
    }
    if let Some(pos) = response.hover_pos() {
        let step = (((pos.x - rect.min.x) / cw) as usize).min(total - 1);
        let row = (((pos.y - rect.min.y) / (ch + 2.0)) as usize).min(n_rows - 1);
        let text = if planned {
            match input.preview.and_then(|p| p.steps.get(step)) {
                Some(Planned::Compute(r)) => format!("step {step}: will compute — {}", r.label()),
                Some(Planned::Reuse(r)) => format!("step {step}: will reuse — {}", r.label()),
                Some(Planned::Indicator) => {
                    format!("step {step}: decided during the run by the residual diff")
                }
                None => format!("step {step}"),
            }
        } else {
            rows_data
                .get(step)
                .and_then(|r| {
                    let branch = branches.get(row)?;
                    let call = r.calls.iter().find(|c| c.branch == *branch)?;
                    let mut t = describe_call(call, input.hide_times);
                    if !input.hide_times {
                        t.push_str(&format!("\nstep time {:.2} ms", r.ms));
                    }
                    Some(t)
                })
                .unwrap_or_else(|| format!("step {step}: not run yet"))
        };
        response.on_hover_text_at_pointer(text);
    }
    if branches.len() > 1 {
        let names: Vec<&str> = branches.iter().map(|b| b.name()).collect();
        ui.weak(format!("rows: {}", names.join(", ")));
    }
}

/// The legend of the timeline's colours.
pub fn legend(ui: &mut Ui, theme: &Theme) {
    let c = &theme.colors;
    ui.horizontal_wrapped(|ui| {
        for (color, label) in [
            (c.computed, "computed"),
            (c.reused, "reused"),
            (c.warmup, "warmup"),
            (c.forced, "forced"),
            (c.undecided, "decided live"),
        ] {
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(9.0), Sense::hover());
            ui.painter().rect_filled(rect, 1.0, color.color());
            ui.weak(label);
        }
    });
}

/// Residual diff per step (first branch with diffs) against the threshold line.
pub fn diff_plot(ui: &mut Ui, theme: &Theme, input: &StatsInput<'_>, id: egui::Id) {
    let (rows_data, total) = rows(input);
    let points: Vec<[f64; 2]> = rows_data
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let d = r.calls.iter().filter_map(|c| c.diff).find(|d| *d >= 0.0)?;
            Some([i as f64, d])
        })
        .collect();
    let threshold = input.threshold.or_else(|| {
        rows_data
            .iter()
            .flat_map(|r| r.calls.iter())
            .find_map(|c| c.threshold)
    });
    if points.is_empty() {
        ui.weak(no_diff_message(input, rows_data.is_empty()));
        return;
    }
    let [w, h] = theme.spacing.plot_size;
    Plot::new(id.with("diff"))
        .width(w)
        .height(h)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .include_x(0.0)
        .include_x(total.max(1) as f64 - 1.0)
        .include_y(0.0)
        .show(ui, |plot| {
            plot.line(
                Line::new("residual diff", PlotPoints::new(points))
                    .color(theme.colors.diff_line.color()),
            );
            if let Some(t) = threshold {
                plot.hline(HLine::new("threshold", t).color(theme.colors.threshold_line.color()));
            }
        });
}

/// Why there is no residual diff to plot, in the words of the strategy at hand.
fn no_diff_message(input: &StatsInput<'_>, no_steps_yet: bool) -> String {
    match input.strategy {
        None => "residual diff: measured only by an adaptive step cache".into(),
        Some(s @ (Strategy::Fixed | Strategy::Dynamic)) => format!(
            "residual diff: not measured (the {} schedule decides by step index)",
            s.name()
        ),
        Some(Strategy::Adaptive | Strategy::FirstBlock | Strategy::TeaCache) if no_steps_yet => {
            "residual diff: none measured yet".into()
        }
        // The first call of a run only sets the reference.
        Some(Strategy::FirstBlock) => "residual diff: none measured (only one call so far)".into(),
        Some(Strategy::MagCache) => {
            "accumulated error: none yet (the retention steps always compute)".into()
        }
        Some(Strategy::TeaCache) => {
            "accumulated distance: none measured (the first and last calls always compute)".into()
        }
        Some(Strategy::Adaptive) if input.threshold.is_some_and(|t| t >= 1.0) => {
            "residual diff: none measured (a threshold of 1 or more reuses without measuring)"
                .into()
        }
        Some(Strategy::Adaptive) => {
            "residual diff: none measured (every call was warmup or forced to compute)".into()
        }
        Some(s @ (Strategy::Pab | Strategy::FasterCache)) => format!(
            "residual diff: not measured ({} reuses attention by call count inside its timestep \
             window)",
            s.name()
        ),
        Some(Strategy::DbPrune) => {
            "block diffs: none measured yet (warmup, or no block stored)".into()
        }
        Some(Strategy::EasyCache) => {
            "predicted change: none yet (outside the window, or the first two calls in it)".into()
        }
        Some(Strategy::FastCache) => "block change: none measured (the first call runs every \
                                      block)"
            .into(),
    }
}

/// Per-step wall time as bars, coloured like the timeline.
pub fn time_bars(ui: &mut Ui, theme: &Theme, input: &StatsInput<'_>, id: egui::Id) {
    let (rows_data, total) = rows(input);
    if rows_data.is_empty() {
        return;
    }
    let bars: Vec<Bar> = rows_data
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let color = r
                .calls
                .first()
                .map_or(theme.colors.time_bar.color(), |c| call_color(theme, c));
            let ms = if input.hide_times { 1.0 } else { r.ms };
            Bar::new(i as f64, ms).width(0.8).fill(color)
        })
        .collect();
    let [w, h] = theme.spacing.plot_size;
    Plot::new(id.with("times"))
        .width(w)
        .height(h * 0.7)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .include_x(-0.5)
        .include_x(total as f64 - 0.5)
        .include_y(0.0)
        .show(ui, |plot| {
            plot.bar_chart(BarChart::new("step ms", bars));
        });
}

/// Hit rate, block evaluations saved, ideal vs measured speedup, diff percentiles.
pub fn totals(ui: &mut Ui, theme: &Theme, input: &StatsInput<'_>) {
    let stats = finished(input);
    let calls: Vec<CallRecord> = match (stats, input.live) {
        (Some(s), _) => s.calls.clone(),
        (None, Some(live)) => live.iter().flat_map(|s| s.calls.iter().cloned()).collect(),
        (None, None) => Vec::new(),
    };
    if calls.is_empty() {
        if let Some(p) = input.preview {
            ui.label(format!(
                "planned: {} compute, {} reuse, {} decided live",
                p.computes, p.reuses, p.undecided
            ));
            if let Some(d) = p.degenerate {
                ui.colored_label(theme.colors.warning.color(), d.describe());
            }
        }
        return;
    }
    let summary = stats
        .and_then(|s| s.summary.clone())
        .unwrap_or_else(|| CacheSummary::from_records("", &calls, 0));
    egui::Grid::new(ui.id().with("totals"))
        .num_columns(2)
        .spacing([12.0, 2.0])
        .show(ui, |ui| {
            ui.label("hit rate");
            ui.label(format!(
                "{:.0}% ({} of {} calls reused)",
                summary.hit_rate * 100.0,
                summary.reused_calls,
                summary.calls
            ));
            ui.end_row();
            ui.label("block evals saved");
            ui.label(format!(
                "{} of {}",
                summary.block_evaluations_uncached - summary.block_evaluations,
                summary.block_evaluations_uncached
            ));
            ui.end_row();
            ui.label("ideal speedup");
            ui.label(format!("{:.2}×", summary.ideal_speedup));
            ui.end_row();
            ui.label("measured speedup");
            match stats.and_then(|s| s.measured.as_ref()) {
                Some(m) if !input.hide_times => measured_rows(ui, theme, m),
                Some(m) => {
                    ui.label(format!("measured ({})", m.verdict.name()));
                    ui.end_row();
                }
                None => {
                    ui.weak(not_measured(input, stats.is_some()));
                    ui.end_row();
                }
            }
            if let Some(d) = &summary.diffs {
                ui.label("diff percentiles");
                ui.label(format!(
                    "min {:.3} · p25 {:.3} · p50 {:.3}\np75 {:.3} · p95 {:.3} · max {:.3}",
                    d.min, d.p25, d.p50, d.p75, d.p95, d.max
                ));
                ui.end_row();
            }
        });
}

/// Why there is no measured speedup (yet), in the words of the Sampler's setting.
fn not_measured(input: &StatsInput<'_>, finished: bool) -> String {
    match (input.measuring, input.baseline) {
        (Some(p), _) => format!("measuring: {}", p.label()),
        (None, BaselineSetting::On { .. }) if finished && input.stale => {
            "not timed in the previous run".into()
        }
        (None, BaselineSetting::On { .. }) if finished => {
            "not timed in this run: run again to measure".into()
        }
        (None, BaselineSetting::On { rounds }) => {
            format!("timed when the run ends ({rounds} rounds against an uncached run)")
        }
        (None, BaselineSetting::NoCache) => "baseline needs a step cache on the Sampler".into(),
        (None, BaselineSetting::Off) => "turn on the Sampler's baseline to measure".into(),
    }
}

/// The measured speedup and its rounds: a result in the `ok` colour only when it is one; a
/// speedup beyond the ideal is shown as the ideal (within the spread) or flagged as noise.
fn measured_rows(ui: &mut Ui, theme: &Theme, m: &Measured) {
    let c = &theme.colors;
    let range = format!("{:.2}–{:.2}×", m.speedup_min, m.speedup_max);
    let headline = match m.verdict {
        Verdict::Plausible => {
            let color = if m.speedup < 1.0 { c.error } else { c.ok };
            ui.colored_label(color.color(), format!("{:.2}× ({range})", m.speedup))
        }
        Verdict::WithinNoise => ui.label(format!("at the ideal {:.2}× ({range})", m.ideal_speedup)),
        Verdict::Noisy => ui.colored_label(
            c.warning.color(),
            format!("noisy measurement: {:.2}× ({range})", m.speedup),
        ),
    };
    headline.on_hover_text(m.headline("×"));
    ui.end_row();
    ui.label("rounds");
    let load = m.load_average.map_or("load average unknown".into(), |l| {
        format!("load average {l:.2}")
    });
    match m.verdict {
        Verdict::Noisy => ui.colored_label(
            c.warning.color(),
            format!(
                "{} interleaved; {load}\nbeyond the ideal {:.2}× by more than\nthe spread: \
                 not a result",
                m.rounds, m.ideal_speedup
            ),
        ),
        _ => ui.label(format!(
            "{} interleaved; {:.0}% of the ideal\n{load}",
            m.rounds,
            m.efficiency * 100.0
        )),
    };
    ui.end_row();
    let spread = |s: &cachedit_nodes::sampling::measure::Spread| {
        format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
    };
    ui.label("wall ms");
    ui.label(format!(
        "uncached {}, cached {}",
        spread(&m.baseline.wall_ms),
        spread(&m.cached.wall_ms)
    ));
    ui.end_row();
    ui.label("CPU ms");
    match (&m.baseline.cpu_ms, &m.cached.cpu_ms, m.cpu_speedup) {
        (Some(b), Some(cached), Some(x)) => ui.label(format!(
            "uncached {}, cached {}\n({x:.2}×)",
            spread(b),
            spread(cached)
        )),
        _ => ui.weak("not reported by this OS"),
    };
    ui.end_row();
    ui.label("quality");
    ui.label(format!("PSNR {:.1} dB, SSIM {:.3}", m.psnr_db, m.ssim));
    ui.end_row();
    if !m.repeatable {
        ui.label("");
        ui.colored_label(c.warning.color(), "the rounds gave different images");
        ui.end_row();
    }
}

/// The whole Detailed Stats body.
pub fn show(ui: &mut Ui, theme: &Theme, input: &StatsInput<'_>, id: egui::Id) {
    ui.vertical(|ui| {
        if input.stale && finished(input).is_some() {
            ui.colored_label(
                theme.colors.warning.color(),
                "previous run: these statistics are not from the latest run",
            );
            ui.multiply_opacity(STALE_OPACITY);
        }
        timeline(ui, theme, input);
        legend(ui, theme);
        diff_plot(ui, theme, input, id);
        time_bars(ui, theme, input, id);
        totals(ui, theme, input);
    });
}
