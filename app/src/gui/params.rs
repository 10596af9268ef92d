//! Param widgets: one per declared param, within its range, with its help text on hover.

use super::theme::Theme;
use cachedit_nodes::cache::DiffStats;
use cachedit_nodes::graph::document::{Node, Value};
use cachedit_nodes::registry::{KindSpec, ParamKind, ParamSpec};
use egui::{Sense, Ui, Vec2};

/// The name of the threshold param that gets the diff-percentile ticks.
pub const THRESHOLD_PARAM: &str = "residual_diff_threshold";

/// A param change the user made this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamChange {
    pub name: String,
    pub value: Value,
}

/// The value a node has for a param (its own, or the declared default).
pub fn current(node: &Node, spec: &ParamSpec) -> Value {
    node.params
        .get(spec.name)
        .cloned()
        .unwrap_or_else(|| spec.default.clone())
}

/// One param's widget; returns the new value when it changed.
pub fn param_widget(ui: &mut Ui, node: &Node, spec: &ParamSpec) -> Option<Value> {
    let value = current(node, spec);
    let id = ui.id().with((node.id.0, spec.name));
    let response_value = match (&spec.kind, &value) {
        (ParamKind::Int { min, max }, v) => {
            let mut x = match v {
                Value::Int(i) => *i,
                Value::Float(f) => *f as i64,
                _ => spec.default.as_f64().unwrap_or(0.0) as i64,
            };
            let r = ui.add(
                egui::DragValue::new(&mut x)
                    .range(*min..=*max)
                    .speed(speed(*min as f64, *max as f64)),
            );
            (r.changed(), Value::Int(x), r)
        }
        (ParamKind::Float { min, max }, v) => {
            let mut x = v.as_f64().unwrap_or(*min);
            let r = if max - min <= 10.0 {
                ui.add(egui::Slider::new(&mut x, *min..=*max).max_decimals(4))
            } else {
                ui.add(
                    egui::DragValue::new(&mut x)
                        .range(*min..=*max)
                        .speed(speed(*min, *max)),
                )
            };
            (r.changed(), Value::Float(x), r)
        }
        (ParamKind::Bool, v) => {
            let mut b = matches!(v, Value::Bool(true));
            let r = ui.checkbox(&mut b, "");
            (r.changed(), Value::Bool(b), r)
        }
        (ParamKind::Choice(options), v) => {
            let mut selected = match v {
                Value::Text(s) => s.clone(),
                other => other.to_string(),
            };
            let before = selected.clone();
            let r = egui::ComboBox::from_id_salt(id)
                .selected_text(selected.clone())
                .show_ui(ui, |ui| {
                    for o in options.iter() {
                        ui.selectable_value(&mut selected, (*o).to_string(), *o);
                    }
                })
                .response;
            (selected != before, Value::Text(selected), r)
        }
        (ParamKind::Text, v) => {
            let mut s = match v {
                Value::Text(s) => s.clone(),
                other => other.to_string(),
            };
            let r = ui.add(
                egui::TextEdit::singleline(&mut s)
                    .desired_width(130.0)
                    .id(id),
            );
            (r.changed(), Value::Text(s), r)
        }
    };
    let (changed, new, response) = response_value;
    response.on_hover_text(spec.help);
    changed.then_some(new)
}

fn speed(min: f64, max: f64) -> f64 {
    ((max - min) / 400.0).clamp(0.001, 1.0)
}

/// Where the threshold sits among the recorded diffs, as a warning when it is useless.
pub fn threshold_warning(threshold: f64, diffs: &DiffStats) -> Option<String> {
    if threshold <= diffs.min {
        Some(format!(
            "threshold {threshold:.3} is below every diff of the last run (min {:.3}): \
             nothing will be reused",
            diffs.min
        ))
    } else if threshold > diffs.p95 {
        Some(format!(
            "threshold {threshold:.3} is above almost all diffs (p95 {:.3}): nearly every \
             step will be reused",
            diffs.p95
        ))
    } else {
        None
    }
}

/// Ticks of the last run's diff percentiles on a small scale, with the threshold marked.
pub fn percentile_ticks(ui: &mut Ui, theme: &Theme, threshold: f64, diffs: &DiffStats) {
    let top = diffs.max.max(threshold).max(1e-6) * 1.1;
    let size = Vec2::new(180.0, 14.0);
    let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let x = |v: f64| rect.min.x + (v.max(0.0) / top) as f32 * rect.width();
    painter.line_segment(
        [rect.left_center(), rect.right_center()],
        (1.0, theme.colors.text_weak.color()),
    );
    for (v, tall) in [
        (diffs.min, false),
        (diffs.p25, false),
        (diffs.p50, true),
        (diffs.p75, false),
        (diffs.p95, true),
        (diffs.max, false),
    ] {
        let h = if tall { 6.0 } else { 4.0 };
        let xv = x(v);
        painter.line_segment(
            [
                egui::pos2(xv, rect.center().y - h),
                egui::pos2(xv, rect.center().y + h),
            ],
            (1.5, theme.colors.diff_line.color()),
        );
    }
    let xt = x(threshold);
    painter.line_segment(
        [egui::pos2(xt, rect.top()), egui::pos2(xt, rect.bottom())],
        (2.0, theme.colors.threshold_line.color()),
    );
    response.on_hover_text(format!(
        "last run's residual diffs: min {:.3} · p25 {:.3} · p50 {:.3} · p75 {:.3} · p95 {:.3} · \
         max {:.3}; threshold {threshold:.3}",
        diffs.min, diffs.p25, diffs.p50, diffs.p75, diffs.p95, diffs.max
    ));
}

/// Does `param` apply to the node as it is set now (see `ParamSpec::when`)?
pub fn applies(node: &Node, spec: &KindSpec, param: &ParamSpec) -> bool {
    param.applies(|name| spec.param(name).map(|p| current(node, p)))
}

/// All param widgets of a node that apply to its settings, advanced ones collapsed; returns
/// the changes.
pub fn params_ui(ui: &mut Ui, node: &Node, spec: &KindSpec) -> Vec<ParamChange> {
    let mut changes = Vec::new();
    let shown: Vec<&ParamSpec> = spec
        .params
        .iter()
        .filter(|p| applies(node, spec, p))
        .collect();
    let mut grid = |ui: &mut Ui, advanced: bool| {
        egui::Grid::new(ui.id().with((node.id.0, advanced)))
            .num_columns(2)
            .spacing([8.0, 3.0])
            .show(ui, |ui| {
                for p in shown.iter().filter(|p| p.advanced == advanced) {
                    ui.label(p.name).on_hover_text(p.help);
                    if let Some(v) = param_widget(ui, node, p) {
                        changes.push(ParamChange {
                            name: p.name.to_string(),
                            value: v,
                        });
                    }
                    ui.end_row();
                }
            });
    };
    grid(ui, false);
    if shown.iter().any(|p| p.advanced) {
        egui::CollapsingHeader::new("Advanced")
            .id_salt((node.id.0, "advanced"))
            .show(ui, |ui| grid(ui, true));
    }
    changes
}

/// The threshold against the last run's diff percentiles (ticks), with a warning when it is
/// below every diff or above almost all; shown whether or not the field itself is expanded.
pub fn threshold_ui(ui: &mut Ui, theme: &Theme, node: &Node, spec: &KindSpec, diffs: &DiffStats) {
    let Some(t) = spec
        .param(THRESHOLD_PARAM)
        .filter(|p| applies(node, spec, p))
        .and_then(|p| current(node, p).as_f64())
    else {
        return;
    };
    ui.horizontal(|ui| {
        ui.label(format!("{THRESHOLD_PARAM} {t:.3}"));
        percentile_ticks(ui, theme, t, diffs);
    });
    if let Some(w) = threshold_warning(t, diffs) {
        ui.colored_label(theme.colors.warning.color(), w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_when_threshold_is_below_or_above_the_diffs() {
        let d = DiffStats::of([0.05, 0.1, 0.2, 0.3]).expect("stats");
        assert!(threshold_warning(0.01, &d).is_some_and(|w| w.contains("nothing")));
        assert!(threshold_warning(0.5, &d).is_some_and(|w| w.contains("nearly every")));
        assert!(threshold_warning(0.15, &d).is_none());
    }
}
