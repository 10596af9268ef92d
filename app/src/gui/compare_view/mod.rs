//! The large comparison view: the grid of every cell's images (nearest-neighbour zoom, a
//! pixel readout under the pointer, a difference map against the reference), an A/B view
//! between any two cells (a split you drag, or hold Space to flip), and the speed–quality
//! scatter with its Pareto front, each point selecting its cell. It follows a running Compare
//! node live (cells fill in as samples finish; a cancelled run keeps what finished) or shows
//! run-history entries, one or two at once.

pub mod model;

use super::runner::{NodeStatus, Runner};
use super::theme::Theme;
use cachedit_nodes::compare::Comparison;
use cachedit_nodes::graph::document::NodeId;
use cachedit_nodes::image::RgbImage;
use egui::{Color32, Pos2, Rect, Sense, TextureHandle, Ui, Vec2};
use egui_plot::{Legend, Line, Plot, PlotPoint, PlotPoints, Points, VLine};
use model::{difference_map, pareto_front, plot_quality, points, Metric, ViewData};
use std::collections::HashMap;
use std::sync::Arc;

/// Where the view's data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The latest comparison of a Compare or Sweep node, followed as it runs.
    Live(NodeId),
    /// Run-history entries by id (two are shown merged).
    History(Vec<String>),
}

/// Grid or A/B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Grid,
    AB,
}

/// A click on a scatter point lands within this many points of it.
const POINT_PICK_RADIUS: f32 = 12.0;

/// The view's state (kept by the editor; the window is drawn by [`CompareView::show`]).
pub struct CompareView {
    pub open: bool,
    pub source: Option<Source>,
    pub data: Option<ViewData>,
    pub mode: Mode,
    /// Whole-number zoom: every image pixel becomes `zoom` × `zoom` screen points.
    pub zoom: u32,
    /// The grid picks the largest zoom at which every column fits the width, until the user
    /// moves the zoom slider.
    pub fit_zoom: bool,
    /// Show |cell − reference| instead of the images.
    pub diff: bool,
    /// How much the difference map is amplified.
    pub gain: f32,
    /// The two cells of the A/B view (column indices).
    pub a: usize,
    pub b: usize,
    /// Where the A/B split is, 0 (all B) to 1 (all A).
    pub split: f32,
    /// The sample (row) the A/B view shows.
    pub row: usize,
    pub metric: Metric,
    /// The cell picked in the scatter or the grid (framed in the grid).
    pub selected: Option<usize>,
    /// Where each scatter point was drawn in the last frame (column, screen position).
    pub points_on_screen: Vec<(usize, Pos2)>,
    /// The comparison the live data was built from (rebuilt when the node sends a new one).
    seen: Option<Arc<Comparison>>,
    textures: HashMap<(usize, usize, bool), TextureHandle>,
    /// Per column: its number and what its config changes against the others.
    headings: Vec<String>,
    /// Why the last texture could not be made (sizes differ), for the status line.
    problem: Option<String>,
    /// Hide wall-clock numbers (snapshot tests).
    pub hide_times: bool,
}

impl Default for CompareView {
    fn default() -> Self {
        CompareView {
            open: false,
            source: None,
            data: None,
            mode: Mode::Grid,
            zoom: 4,
            fit_zoom: true,
            diff: false,
            gain: 4.0,
            a: 0,
            b: 1,
            split: 0.5,
            row: 0,
            metric: Metric::Psnr,
            selected: None,
            points_on_screen: Vec::new(),
            seen: None,
            textures: HashMap::new(),
            headings: Vec::new(),
            problem: None,
            hide_times: false,
        }
    }
}

impl CompareView {
    /// Opens the view on a Compare or Sweep node's latest comparison.
    pub fn open_live(&mut self, node: NodeId) {
        if self.source != Some(Source::Live(node)) {
            self.set_data(None);
            self.seen = None;
            self.source = Some(Source::Live(node));
        }
        self.open = true;
    }

    /// Opens the view on data that does not change (run-history entries).
    pub fn open_data(&mut self, data: ViewData, source: Source) {
        self.seen = None;
        self.source = Some(source);
        self.set_data(Some(data));
        self.a = 0;
        self.b = 1;
        self.selected = None;
        self.open = true;
    }

    fn set_data(&mut self, data: Option<ViewData>) {
        self.textures.clear();
        self.problem = None;
        self.data = data;
        self.headings = self.data.as_ref().map_or_else(Vec::new, headings);
        let columns = self.data.as_ref().map_or(0, |d| d.columns.len());
        let rows = self.data.as_ref().map_or(0, |d| d.samples.len());
        self.a = self.a.min(columns.saturating_sub(1));
        self.b = self.b.min(columns.saturating_sub(1));
        self.row = self.row.min(rows.saturating_sub(1));
        self.selected = self.selected.filter(|&s| s < columns);
    }

    /// The textures made so far: (column, row, difference map).
    pub fn textures_made(&self) -> Vec<(usize, usize, bool)> {
        let mut keys: Vec<_> = self.textures.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Takes a live node's newest comparison (call every frame).
    pub fn sync(&mut self, runner: &Runner, title: &str) {
        let Some(Source::Live(node)) = self.source else {
            return;
        };
        match runner.comparisons.get(&node) {
            Some(c) if !self.seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, c)) => {
                self.seen = Some(c.clone());
                self.set_data(Some(ViewData::from_comparison(title, c)));
            }
            _ => {}
        }
    }

    /// The image of `(column, row)`, or its difference from the reference of its source.
    fn texture(&mut self, ctx: &egui::Context, column: usize, row: usize) -> Option<TextureHandle> {
        let diff = self.diff;
        if let Some(t) = self.textures.get(&(column, row, diff)) {
            return Some(t.clone());
        }
        let data = self.data.as_ref()?;
        let image = data.columns.get(column)?.images.get(row)?.clone();
        let shown: Arc<RgbImage> = if diff {
            let reference = data.reference_of(column);
            let base = data.columns.get(reference)?.images.get(row)?;
            match difference_map(&image, base, self.gain) {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    self.problem = Some(format!("difference map of {column}: {e}"));
                    return None;
                }
            }
        } else {
            image
        };
        let tex = ctx.load_texture(
            format!("compare-{column}-{row}-{diff}"),
            egui::ColorImage::from_rgb(
                [shown.width as usize, shown.height as usize],
                &shown.pixels,
            ),
            egui::TextureOptions::NEAREST,
        );
        self.textures.insert((column, row, diff), tex.clone());
        Some(tex)
    }

    /// Draws the window when open. `status` is said under the title (running, cancelled).
    pub fn show(&mut self, ctx: &egui::Context, theme: &Theme, status: Option<String>) {
        if !self.open {
            return;
        }
        let mut open = self.open;
        egui::Window::new("Comparison")
            .id(egui::Id::new("compare-view"))
            .open(&mut open)
            .default_size([1280.0, 760.0])
            .resizable(true)
            .show(ctx, |ui| self.contents(ui, theme, status));
        self.open = open;
    }

    fn contents(&mut self, ui: &mut Ui, theme: &Theme, status: Option<String>) {
        let Some(data) = self.data.as_ref() else {
            ui.label(
                status.unwrap_or_else(|| "Nothing to compare yet: run a Compare node.".into()),
            );
            return;
        };
        let title = data.title.clone();
        let note = data.note.clone();
        ui.horizontal_wrapped(|ui| {
            ui.strong(title);
            ui.separator();
            ui.selectable_value(&mut self.mode, Mode::Grid, "Grid");
            ui.selectable_value(&mut self.mode, Mode::AB, "A/B");
            ui.separator();
            if ui
                .add(egui::Slider::new(&mut self.zoom, 1..=16).text("zoom ×"))
                .changed()
            {
                self.fit_zoom = false;
            }
            ui.checkbox(&mut self.diff, "difference map")
                .on_hover_text("|cell − reference| per channel, amplified by the gain");
            if self.diff {
                let before = self.gain;
                ui.add(
                    egui::Slider::new(&mut self.gain, 1.0..=32.0)
                        .logarithmic(true)
                        .text("gain"),
                );
                if self.gain != before {
                    self.textures.retain(|k, _| !k.2);
                }
            }
        });
        for line in [status, note, self.problem.clone()].into_iter().flatten() {
            ui.weak(line);
        }
        egui::Panel::right("compare-side")
            .resizable(true)
            .default_size(360.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side(ui, theme));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::both()
                .auto_shrink([false, false])
                .show(ui, |ui| match self.mode {
                    Mode::Grid => self.grid(ui, theme),
                    Mode::AB => self.ab(ui),
                });
        });
    }

    /// Every sample (rows) of every cell (columns), each headed by its numbers.
    fn grid(&mut self, ui: &mut Ui, theme: &Theme) {
        let Some(data) = self.data.clone() else {
            return;
        };
        let image_width = data
            .columns
            .iter()
            .flat_map(|c| c.images.first())
            .map(|i| i.width)
            .max()
            .unwrap_or(1)
            .max(1) as f32;
        if self.fit_zoom {
            // The row labels take about 60 points, each column 6 points of spacing.
            let columns = data.columns.len().max(1) as f32;
            let room = (ui.available_width() - 60.0) / columns - 6.0;
            self.zoom = ((room / image_width).floor() as u32).clamp(1, 16);
        }
        let zoom = self.zoom as f32;
        let cell_width = image_width * zoom;
        egui::Grid::new("compare-grid")
            .spacing([6.0, 6.0])
            .show(ui, |ui| {
                ui.label("");
                for (i, c) in data.columns.iter().enumerate() {
                    ui.vertical(|ui| {
                        // Headings wrap at the image's width, so columns never overlap.
                        ui.set_max_width(cell_width);
                        let picked = self.selected == Some(i);
                        let heading = self.headings.get(i).cloned().unwrap_or_default();
                        let head = egui::RichText::new(heading).strong();
                        let head = if picked {
                            head.color(theme.colors.accent.color())
                        } else {
                            head
                        };
                        if ui
                            .add(egui::Label::new(head).sense(Sense::click()))
                            .on_hover_text(format!(
                                "{}\nselect this cell (B in the A/B view)",
                                c.signature
                            ))
                            .clicked()
                        {
                            self.pick(i);
                        }
                        ui.label(
                            egui::RichText::new(column_numbers(&c.stats, self.hide_times)).small(),
                        );
                    });
                }
                ui.end_row();
                for (row, (seed, class)) in data.samples.iter().enumerate() {
                    ui.label(format!("seed {seed}\nclass {class}"));
                    for (col, column) in data.columns.iter().enumerate() {
                        let Some(tex) = self.texture(ui.ctx(), col, row) else {
                            ui.weak(if column.images.len() <= row {
                                "running…"
                            } else {
                                "—"
                            });
                            continue;
                        };
                        let size = tex.size_vec2() * zoom;
                        let response =
                            ui.add(egui::Image::new((tex.id(), size)).sense(Sense::click()));
                        let label = format!("cell {} sample {}", column.label, row + 1);
                        response.widget_info(|| {
                            egui::WidgetInfo::labeled(egui::WidgetType::Image, true, &label)
                        });
                        if self.selected == Some(col) {
                            ui.painter().rect_stroke(
                                response.rect.expand(2.0),
                                0.0,
                                egui::Stroke::new(2.0, theme.colors.accent.color()),
                                egui::StrokeKind::Outside,
                            );
                        }
                        if let Some(pos) = response.hover_pos() {
                            let reference = data.reference_of(col);
                            let text = pixel_readout(
                                &data,
                                col,
                                reference,
                                row,
                                pixel_at(pos, response.rect, zoom),
                            );
                            response.clone().on_hover_text(text);
                        }
                        if response.clicked() {
                            self.pick(col);
                        }
                    }
                    ui.end_row();
                }
            });
    }

    /// Picks a cell: framed in the grid, and B of the A/B view (A stays, or becomes its
    /// reference when A was the cell itself).
    pub fn pick(&mut self, column: usize) {
        self.selected = Some(column);
        if let Some(data) = &self.data {
            if self.a == column {
                self.a = data.reference_of(column);
            }
        }
        self.b = column;
    }

    /// Two cells over each other, split where the user drags; Space held shows B whole.
    fn ab(&mut self, ui: &mut Ui) {
        let Some(data) = self.data.clone() else {
            return;
        };
        let headings = self.headings.clone();
        let label = |i: usize| headings.get(i).cloned().unwrap_or_default();
        ui.horizontal(|ui| {
            for (name, slot) in [("A", &mut self.a), ("B", &mut self.b)] {
                egui::ComboBox::from_label(name)
                    .selected_text(label(*slot))
                    .show_ui(ui, |ui| {
                        for i in 0..data.columns.len() {
                            ui.selectable_value(slot, i, label(i));
                        }
                    });
            }
            let row_text = |r: usize| {
                data.samples
                    .get(r)
                    .map_or(String::new(), |(s, c)| format!("seed {s} class {c}"))
            };
            egui::ComboBox::from_label("sample")
                .selected_text(row_text(self.row))
                .show_ui(ui, |ui| {
                    for r in 0..data.samples.len() {
                        ui.selectable_value(&mut self.row, r, row_text(r));
                    }
                });
        });
        let flip = ui.input(|i| i.key_down(egui::Key::Space));
        let (Some(ta), Some(tb)) = (
            self.texture(ui.ctx(), self.a, self.row),
            self.texture(ui.ctx(), self.b, self.row),
        ) else {
            ui.weak("this sample has not finished for both cells");
            return;
        };
        let quality = match (
            data.columns[self.a].images.get(self.row),
            data.columns[self.b].images.get(self.row),
        ) {
            (Some(a), Some(b)) => cachedit_nodes::metrics::psnr(a, b)
                .map(|p| format!("B against A: {}", psnr_text(p)))
                .unwrap_or_else(|e| e.to_string()),
            _ => String::new(),
        };
        ui.add(egui::Slider::new(&mut self.split, 0.0..=1.0).text("split (drag the image)"));
        ui.label(format!(
            "{quality} · left of the line: A, right: B · hold Space to show B whole{}",
            if flip { " (showing B)" } else { "" }
        ));
        let size = ta.size_vec2() * self.zoom as f32;
        let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
        response
            .widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::Image, true, "A/B view"));
        if let Some(p) = response.interact_pointer_pos() {
            self.split = ((p.x - rect.min.x) / rect.width().max(1.0)).clamp(0.0, 1.0);
        }
        let split = if flip { 0.0 } else { self.split };
        let full = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        let x = rect.min.x + rect.width() * split;
        let painter = ui.painter_at(rect);
        let left = Rect::from_min_max(rect.min, Pos2::new(x, rect.max.y));
        let right = Rect::from_min_max(Pos2::new(x, rect.min.y), rect.max);
        painter
            .with_clip_rect(left)
            .image(ta.id(), rect, full, Color32::WHITE);
        painter
            .with_clip_rect(right)
            .image(tb.id(), rect, full, Color32::WHITE);
        if !flip {
            painter.vline(x, rect.y_range(), egui::Stroke::new(2.0, Color32::WHITE));
        }
        if let Some(pos) = response.hover_pos() {
            let text = pixel_readout(
                &data,
                self.b,
                self.a,
                self.row,
                pixel_at(pos, rect, self.zoom as f32),
            );
            response.on_hover_text(text);
        }
    }

    /// The scatter, and the picked cell's numbers.
    fn side(&mut self, ui: &mut Ui, theme: &Theme) {
        let Some(data) = self.data.clone() else {
            return;
        };
        egui::ComboBox::from_label("quality axis")
            .selected_text(self.metric.name())
            .show_ui(ui, |ui| {
                for m in Metric::ALL {
                    ui.selectable_value(&mut self.metric, m, m.name());
                }
            });
        let metric = self.metric;
        let pts = points(&data, metric);
        let front = pareto_front(&pts, metric.higher_is_better());
        let finite_max = pts
            .iter()
            .map(|p| p.quality)
            .filter(|q| q.is_finite())
            .fold(0.0f64, f64::max);
        let y = |q: f64| plot_quality(q, finite_max);
        let accent = theme.colors.accent.color();
        let selected = self.selected;
        let response = Plot::new("compare-scatter")
            .height(260.0)
            .legend(Legend::default().position(egui_plot::Corner::LeftBottom))
            .x_axis_label("measured speedup ×")
            .y_axis_label(metric.name())
            .include_x(1.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .allow_boxed_zoom(false)
            .show(ui, |plot| {
                plot.vline(VLine::new("uncached", 1.0).color(Color32::GRAY));
                let line: Vec<[f64; 2]> = front.iter().map(|p| [p.speedup, y(p.quality)]).collect();
                plot.line(
                    Line::new("Pareto front", PlotPoints::new(line))
                        .color(accent)
                        .width(1.5),
                );
                let all: Vec<[f64; 2]> = pts.iter().map(|p| [p.speedup, y(p.quality)]).collect();
                plot.points(
                    Points::new("cells", PlotPoints::new(all))
                        .radius(4.0)
                        .filled(true),
                );
                if let Some(p) = pts.iter().find(|p| Some(p.column) == selected) {
                    plot.points(
                        Points::new("selected", PlotPoints::new(vec![[p.speedup, y(p.quality)]]))
                            .radius(7.0)
                            .filled(false)
                            .color(accent),
                    );
                }
                for p in &pts {
                    plot.text(
                        egui_plot::Text::new(
                            "",
                            PlotPoint::new(p.speedup, y(p.quality)),
                            format!("  {}", data.columns[p.column].label),
                        )
                        .anchor(egui::Align2::LEFT_BOTTOM),
                    );
                }
            });
        self.points_on_screen = pts
            .iter()
            .map(|p| {
                let at = response
                    .transform
                    .position_from_point(&PlotPoint::new(p.speedup, y(p.quality)));
                (p.column, at)
            })
            .collect();
        response.response.widget_info(|| {
            egui::WidgetInfo::labeled(egui::WidgetType::Other, true, "speed–quality scatter")
        });
        if response.response.clicked() {
            let at = response.response.interact_pointer_pos();
            let nearest = at.and_then(|at| {
                self.points_on_screen
                    .iter()
                    .map(|(c, p)| (*c, p.distance(at)))
                    .filter(|(_, d)| *d <= POINT_PICK_RADIUS)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            });
            if let Some((column, _)) = nearest {
                self.pick(column);
            }
        }
        if pts.len() < data.columns.iter().filter(|c| !c.stats.reference).count() {
            ui.weak(format!(
                "cells without a measured speedup or {} are not drawn",
                metric.name()
            ));
        }
        let on_front: Vec<&str> = front
            .iter()
            .map(|p| data.columns[p.column].label.as_str())
            .collect();
        ui.label(format!("Pareto front: {}", on_front.join(", ")));
        ui.separator();
        match self
            .selected
            .and_then(|s| data.columns.get(s).map(|c| (s, c)))
        {
            Some((_, c)) => {
                ui.strong(format!("{}  {}", c.label, c.signature));
                ui.label(column_numbers(&c.stats, self.hide_times));
                ui.weak(format!("from {}", c.source));
            }
            None => {
                ui.weak("click a point or a cell to see its numbers");
            }
        }
    }
}

/// The image pixel under `pos` in an image drawn at `rect`, `zoom` points per pixel.
fn pixel_at(pos: Pos2, rect: Rect, zoom: f32) -> (u32, u32) {
    let p: Vec2 = (pos - rect.min) / zoom.max(1.0);
    (p.x.max(0.0) as u32, p.y.max(0.0) as u32)
}

/// "x 3, y 5 · this 12 40 200 · reference 12 41 198".
fn pixel_readout(
    data: &ViewData,
    column: usize,
    reference: usize,
    row: usize,
    (x, y): (u32, u32),
) -> String {
    let rgb = |c: usize| {
        let img = data.columns.get(c)?.images.get(row)?;
        if x >= img.width || y >= img.height {
            return None;
        }
        let i = ((y * img.width + x) * 3) as usize;
        Some(format!(
            "{} {} {}",
            img.pixels[i],
            img.pixels[i + 1],
            img.pixels[i + 2]
        ))
    };
    let mut text = format!("pixel x {x}, y {y}");
    if let Some(v) = rgb(column) {
        text.push_str(&format!(" · this {v}"));
    }
    if reference != column {
        if let Some(v) = rgb(reference) {
            let name = data
                .columns
                .get(reference)
                .map_or("reference", |c| c.label.as_str());
            text.push_str(&format!(" · {name} {v}"));
        }
    }
    text
}

/// `ref` for a reference column, else the column's number and what its config changes
/// (the parts of the signature the other configs do not share).
fn headings(data: &ViewData) -> Vec<String> {
    let configs: Vec<&str> = data
        .columns
        .iter()
        .filter(|c| !c.stats.reference)
        .map(|c| c.signature.as_str())
        .collect();
    let mut distinct = cachedit_nodes::compare::labels::distinct_parts(&configs).into_iter();
    data.columns
        .iter()
        .map(|c| {
            if c.stats.reference {
                c.label.clone()
            } else {
                format!("{}  {}", c.label, distinct.next().unwrap_or_default())
            }
        })
        .collect()
}

fn psnr_text(p: f64) -> String {
    if p.is_finite() {
        format!("{p:.1} dB")
    } else {
        "identical".into()
    }
}

/// A column's numbers, a line each: time, speedup measured and ideal, hit rate, quality.
pub fn column_numbers(s: &model::ColumnStats, hide_times: bool) -> String {
    let mut lines = Vec::new();
    if let Some(w) = s.wall_ms.filter(|_| !hide_times) {
        lines.push(format!(
            "{:.0} ms ({:.0}–{:.0}) over {} run(s)",
            w.median, w.min, w.max, s.runs
        ));
    }
    if s.reference {
        lines.push("reference: uncached".into());
    } else {
        let measured = s.speedup.map_or("—".to_string(), |x| {
            let noisy = if s.verdict.as_deref() == Some("noisy") {
                " noisy"
            } else {
                ""
            };
            format!("{:.2}× ({:.2}–{:.2}){noisy}", x.median, x.min, x.max)
        });
        lines.push(format!("speedup {measured}, ideal {:.2}×", s.ideal_speedup));
        lines.push(format!("hit rate {:.0} %", s.hit_rate * 100.0));
        let mut quality = Vec::new();
        if let Some(p) = s.psnr_db {
            quality.push(format!("PSNR {}", psnr_text(p.median)));
        }
        if let Some(x) = s.ssim {
            quality.push(format!("SSIM {:.3}", x.median));
        }
        if let Some(k) = s.class_kept {
            quality.push(format!("class kept {:.0} %", k * 100.0));
        }
        if !quality.is_empty() {
            lines.push(quality.join(" · "));
        }
        if let Some(f) = s.feature_distance {
            lines.push(format!("feature distance {:.4}", f.median));
        }
    }
    lines.join("\n")
}

/// What the view says about a live node's run: running, cancelled with what was kept.
pub fn live_status(runner: &Runner, node: NodeId, data: Option<&ViewData>) -> Option<String> {
    if let Some(p) = runner.compare_progress.get(&node) {
        return Some(format!(
            "running: run {} of {}, sample {}; cells fill in as each sample finishes",
            p.runs_done + 1,
            p.runs_total,
            p.sample + 1
        ));
    }
    match runner.status.get(&node) {
        Some(NodeStatus::Cancelled) => Some(format!(
            "cancelled: the {} finished sample(s) are kept",
            data.map_or(0, |d| d.samples.len())
        )),
        Some(NodeStatus::Failed(e)) => Some(format!("failed: {e}")),
        _ if runner.stale.contains(&node) => Some("from the previous run".into()),
        _ => None,
    }
}
