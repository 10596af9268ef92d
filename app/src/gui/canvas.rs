//! The node canvas: egui-snarl as a view of the workflow document, kept in sync with it by our
//! own stable node ids (snarl reuses slot indices after deletes), turning gestures into actions.

use super::body::{self, BodyContext};
use super::runner::{NodeStatus, Notice};
use super::theme::Theme;
use cachedit_nodes::graph::document::{NodeId, PortRef, Value, Workflow};
use cachedit_nodes::registry::{KindSpec, PortType, Registry};
use egui::emath::TSTransform;
use egui::{Id, Pos2, Stroke, Ui};
use egui_snarl::ui::{
    AnyPins, PinInfo, PinWireInfo, SnarlPin, SnarlStyle, SnarlViewer, SnarlWidget,
};
use egui_snarl::{InPin, InPinId, NodeId as SlotId, OutPin, OutPinId, Snarl};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// The canvas widget's id (its selection is read back with it).
pub fn canvas_id() -> Id {
    Id::new("cachedit-canvas")
}

/// What the user did on the canvas this frame; the app applies these to the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Add a node of `kind` at `pos`, optionally wired to an existing port of type `ty`.
    AddNode {
        kind: String,
        pos: [f32; 2],
        wire: Option<(PortRef, PortType, bool)>,
    },
    Connect {
        from: PortRef,
        to: PortRef,
    },
    Disconnect {
        to: PortRef,
    },
    DisconnectOutput {
        from: PortRef,
    },
    SetParam {
        node: NodeId,
        name: String,
        value: Value,
    },
    Remove(Vec<NodeId>),
    Duplicate(Vec<NodeId>),
    Notify(Notice),
}

/// Snarl plus the map from our node ids to its slots.
#[derive(Default)]
pub struct Canvas {
    pub snarl: Snarl<NodeId>,
    slots: BTreeMap<NodeId, SlotId>,
    /// Positions as last taken from the document.
    synced_pos: BTreeMap<NodeId, [f32; 2]>,
    /// Graph-to-screen transform of the last frame (pan and zoom).
    to_global: TSTransform,
    /// Node rectangles (graph coordinates) as last drawn, for "fit to view".
    rects: BTreeMap<NodeId, egui::Rect>,
    /// Frames left before the view is fitted to the nodes (0 = no fit pending). A fit waits a
    /// frame so that node sizes are known.
    fit_in: u8,
    /// Pin rectangles (graph coordinates) as last drawn, keyed by port and side.
    pins: Rc<RefCell<PinRects>>,
    /// The canvas area on screen, as last drawn.
    view: Option<egui::Rect>,
    /// Ctrl+wheel movement not yet turned into a zoom step (pixel-precise wheels).
    wheel_rest: f32,
}

/// The zoom levels Ctrl+wheel steps through, one level per wheel notch.
pub const ZOOM_LEVELS: &[f32] = &[
    0.2, 0.25, 0.33, 0.5, 0.67, 0.75, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0,
];

/// Wheel movement in points that counts as one notch (touchpads and smooth wheels).
const POINTS_PER_NOTCH: f32 = 50.0;

/// The zoom level `notches` steps up (positive) or down from `scale`.
pub fn stepped_zoom(scale: f32, notches: i32) -> f32 {
    let mut z = scale;
    for _ in 0..notches.unsigned_abs() {
        z = if notches > 0 {
            ZOOM_LEVELS.iter().copied().find(|&l| l > z + 1e-3)
        } else {
            ZOOM_LEVELS.iter().rev().copied().find(|&l| l < z - 1e-3)
        }
        .unwrap_or(z);
    }
    z
}

/// Space between an output label and its pin (graph points).
const OUTPUT_PIN_GAP: f32 = 6.0;

/// Room kept between a placed node and its neighbours (graph points).
const PLACE_MARGIN: f32 = 24.0;
/// The size assumed for a node that has not been drawn yet.
pub const DEFAULT_NODE_SIZE: egui::Vec2 = egui::vec2(280.0, 240.0);

/// Where a rectangle the size of `wanted` can go, as near `wanted` as possible, without
/// touching any of `occupied` (with a margin): the first free spot on rings of grid points
/// around it, nearest first.
pub fn free_spot(occupied: &[egui::Rect], wanted: egui::Rect) -> Pos2 {
    let fits = |r: egui::Rect| {
        let r = r.expand(PLACE_MARGIN);
        !occupied.iter().any(|o| o.intersects(r))
    };
    if fits(wanted) {
        return wanted.min;
    }
    let step = 40.0;
    for ring in 1..200i32 {
        let mut candidates: Vec<egui::Vec2> = Vec::new();
        for dx in -ring..=ring {
            for dy in -ring..=ring {
                if dx.abs().max(dy.abs()) == ring {
                    candidates.push(egui::vec2(dx as f32, dy as f32) * step);
                }
            }
        }
        // Nearest first; ties to the right, then below (reading order of a graph).
        candidates.sort_by(|a, b| {
            a.length_sq()
                .total_cmp(&b.length_sq())
                .then(b.x.total_cmp(&a.x))
                .then(b.y.total_cmp(&a.y))
        });
        if let Some(d) = candidates.into_iter().find(|d| fits(wanted.translate(*d))) {
            return wanted.min + d;
        }
    }
    wanted.min
}

/// Where each pin was drawn: (port, is it an input) → rectangle in graph coordinates.
type PinRects = BTreeMap<(PortRef, bool), egui::Rect>;

/// A pin that notes where it was drawn, so that a pin can be found on screen (by tests driving
/// the mouse, and by anything that wants to point at a port).
struct RecordedPin {
    info: PinInfo,
    key: Option<(PortRef, bool)>,
    sink: Rc<RefCell<PinRects>>,
}

impl SnarlPin for RecordedPin {
    fn draw(
        self,
        snarl_style: &SnarlStyle,
        style: &egui::Style,
        rect: egui::Rect,
        painter: &egui::Painter,
    ) -> PinWireInfo {
        if let Some(key) = self.key {
            self.sink.borrow_mut().insert(key, rect);
        }
        self.info.draw(snarl_style, style, rect, painter)
    }
}

fn pos2(p: [f32; 2]) -> Pos2 {
    Pos2::new(p[0], p[1])
}

impl Canvas {
    /// Brings the snarl in line with the document: nodes added/removed, wires, positions.
    pub fn sync(&mut self, wf: &Workflow, registry: &Registry) {
        let ids: BTreeSet<NodeId> = wf.nodes.iter().map(|n| n.id).collect();
        let gone: Vec<NodeId> = self
            .slots
            .keys()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(slot) = self.slots.remove(&id) {
                self.snarl.remove_node(slot);
            }
            self.synced_pos.remove(&id);
        }
        for n in &wf.nodes {
            match self.slots.get(&n.id) {
                None => {
                    let slot = self.snarl.insert_node(pos2(n.pos), n.id);
                    self.slots.insert(n.id, slot);
                    self.synced_pos.insert(n.id, n.pos);
                }
                Some(slot) => {
                    if self.synced_pos.get(&n.id) != Some(&n.pos) {
                        if let Some(info) = self.snarl.get_node_info_mut(*slot) {
                            info.pos = pos2(n.pos);
                        }
                        self.synced_pos.insert(n.id, n.pos);
                    }
                }
            }
        }
        // Wires: what the document links say, by pin index.
        let mut want = BTreeSet::new();
        for l in &wf.links {
            let (Some(from), Some(to)) = (
                self.out_pin(wf, registry, &l.from),
                self.in_pin(wf, registry, &l.to),
            ) else {
                continue;
            };
            want.insert((from, to));
        }
        let have: BTreeSet<(OutPinId, InPinId)> = self.snarl.wires().collect();
        for (from, to) in have.difference(&want) {
            self.snarl.disconnect(*from, *to);
        }
        for (from, to) in want.difference(&have) {
            self.snarl.connect(*from, *to);
        }
    }

    fn out_pin(&self, wf: &Workflow, registry: &Registry, p: &PortRef) -> Option<OutPinId> {
        let spec = registry.spec(&wf.node(p.node)?.kind)?;
        let output = spec.outputs.iter().position(|o| o.name == p.port)?;
        Some(OutPinId {
            node: *self.slots.get(&p.node)?,
            output,
        })
    }

    fn in_pin(&self, wf: &Workflow, registry: &Registry, p: &PortRef) -> Option<InPinId> {
        let spec = registry.spec(&wf.node(p.node)?.kind)?;
        let input = spec.inputs.iter().position(|o| o.name == p.port)?;
        Some(InPinId {
            node: *self.slots.get(&p.node)?,
            input,
        })
    }

    /// Nodes whose canvas position differs from the document's (the user dragged them).
    pub fn moved(&mut self) -> Vec<(NodeId, [f32; 2])> {
        let mut out = Vec::new();
        for (id, slot) in &self.slots {
            let Some(info) = self.snarl.get_node_info(*slot) else {
                continue;
            };
            let p = [info.pos.x, info.pos.y];
            if self
                .synced_pos
                .get(id)
                .is_none_or(|q| (q[0] - p[0]).abs() > 0.01 || (q[1] - p[1]).abs() > 0.01)
            {
                out.push((*id, p));
            }
        }
        for (id, p) in &out {
            self.synced_pos.insert(*id, *p);
        }
        out
    }

    /// The rectangles of the nodes (graph coordinates): as last drawn, or at their document
    /// position with the default size for nodes not drawn yet.
    pub fn occupied(&self, wf: &Workflow) -> Vec<egui::Rect> {
        wf.nodes
            .iter()
            .map(|n| {
                self.rects.get(&n.id).copied().unwrap_or_else(|| {
                    egui::Rect::from_min_size(pos2(n.pos), self.size_of_kind(wf, &n.kind))
                })
            })
            .collect()
    }

    /// The size of a node of `kind`: the largest drawn one, else the default.
    pub fn size_of_kind(&self, wf: &Workflow, kind: &str) -> egui::Vec2 {
        wf.nodes
            .iter()
            .filter(|n| n.kind == kind)
            .filter_map(|n| self.rects.get(&n.id))
            .map(|r| r.size())
            .reduce(|a, b| a.max(b))
            .unwrap_or(DEFAULT_NODE_SIZE)
    }

    /// A free spot near `wanted` (graph coordinates) for a new node of `kind`.
    pub fn place(&self, wf: &Workflow, kind: &str, wanted: Pos2) -> Pos2 {
        let size = self.size_of_kind(wf, kind);
        free_spot(&self.occupied(wf), egui::Rect::from_min_size(wanted, size))
    }

    /// The middle of what the canvas shows (graph coordinates), if it has been drawn.
    pub fn view_center(&self) -> Option<Pos2> {
        self.view.map(|v| self.to_graph(v.center()))
    }

    /// The zoom of the last frame (1 = 100 %).
    pub fn zoom(&self) -> f32 {
        self.to_global.scaling
    }

    /// Asks for the view to be fitted to all nodes on the next frames.
    pub fn request_fit(&mut self) {
        self.fit_in = 4;
    }

    /// Is a screen position over a node (as drawn last frame)?
    pub fn node_at(&self, p: Pos2) -> bool {
        let g = self.to_graph(p);
        self.rects.values().any(|r| r.contains(g))
    }

    /// Where a port's pin is on screen (as drawn last frame); `input` picks the side.
    pub fn pin_pos(&self, port: &PortRef, input: bool) -> Option<Pos2> {
        let rect = *self.pins.borrow().get(&(port.clone(), input))?;
        Some(self.to_global * rect.center())
    }

    /// A node's rectangle on screen (as drawn last frame).
    pub fn node_rect(&self, id: NodeId) -> Option<egui::Rect> {
        Some(self.to_global * *self.rects.get(&id)?)
    }

    /// Is a screen position on the canvas (not on a panel beside it)?
    pub fn shows(&self, p: Pos2) -> bool {
        self.view.is_some_and(|v| v.contains(p))
    }

    /// A graph position on screen (widgets inside nodes report graph coordinates to
    /// accessibility tools; this is where they are drawn).
    pub fn to_screen(&self, p: Pos2) -> Pos2 {
        self.to_global * p
    }

    /// A screen position in graph coordinates.
    pub fn to_graph(&self, p: Pos2) -> Pos2 {
        self.to_global.inverse() * p
    }

    /// The document ids of the nodes selected on the canvas.
    pub fn selected(&self, ctx: &egui::Context) -> Vec<NodeId> {
        egui_snarl::ui::get_selected_nodes(canvas_id(), ctx)
            .into_iter()
            .filter_map(|slot| self.snarl.get_node(slot).copied())
            .collect()
    }

    /// Draws the canvas; returns what the user did.
    pub fn show(
        &mut self,
        ui: &mut Ui,
        bcx: &mut BodyContext<'_>,
        search: &mut String,
    ) -> Vec<Action> {
        // Fitted twice: node sizes settle once they are drawn at the new zoom (text wraps
        // differently), and the second fit uses those sizes.
        let fit = match self.fit_in {
            1 | 3 => self.fit_transform(ui.max_rect()),
            _ => None,
        };
        self.fit_in = self.fit_in.saturating_sub(1);
        if self.fit_in > 0 {
            // The fit lands on a later frame; make sure there is one without waiting for input.
            ui.ctx().request_repaint();
        }
        self.pins.borrow_mut().clear();
        self.view = Some(ui.max_rect());
        let zoom_step = self.wheel_zoom(ui.ctx(), ui.max_rect());
        let mut viewer = Viewer {
            pins: Rc::clone(&self.pins),
            bcx,
            search,
            actions: Vec::new(),
            to_global: self.to_global,
            fit,
            zoom_step,
            rects: BTreeMap::new(),
        };
        let style = snarl_style(viewer.bcx.theme);
        SnarlWidget::new()
            .id(canvas_id())
            .style(style)
            .show(&mut self.snarl, &mut viewer, ui);
        self.to_global = viewer.to_global;
        self.rects = viewer.rects;
        viewer.actions
    }

    /// Ctrl+wheel over the canvas this frame, as whole notches and where the pointer is (the
    /// point that stays put). egui's own continuous Ctrl+wheel zoom is turned off for this.
    fn wheel_zoom(&mut self, ctx: &egui::Context, view: egui::Rect) -> Option<(i32, Pos2)> {
        ctx.options_mut(|o| o.input_options.scroll_zoom_speed = 0.0);
        let (delta, pointer) = ctx.input(|i| {
            let mut delta = 0.0;
            for e in &i.raw.events {
                if let egui::Event::MouseWheel {
                    unit,
                    delta: d,
                    modifiers,
                    ..
                } = e
                {
                    if !modifiers.command {
                        continue;
                    }
                    delta += match unit {
                        egui::MouseWheelUnit::Point => d.y / POINTS_PER_NOTCH,
                        egui::MouseWheelUnit::Line | egui::MouseWheelUnit::Page => d.y,
                    };
                }
            }
            (delta, i.pointer.hover_pos())
        });
        let pointer = pointer.filter(|p| view.contains(*p))?;
        self.wheel_rest += delta;
        let notches = self.wheel_rest.trunc();
        self.wheel_rest -= notches;
        (notches != 0.0).then_some((notches as i32, pointer))
    }

    /// The transform that shows every node inside `view`, at most at 100 %.
    fn fit_transform(&self, view: egui::Rect) -> Option<TSTransform> {
        let mut bounds = egui::Rect::NOTHING;
        for (id, info) in self
            .slots
            .iter()
            .filter_map(|(id, s)| Some((id, self.snarl.get_node_info(*s)?)))
        {
            let r =
                self.rects.get(id).copied().unwrap_or_else(|| {
                    egui::Rect::from_min_size(info.pos, egui::vec2(260.0, 200.0))
                });
            bounds = bounds.union(r);
        }
        if !bounds.is_positive() {
            return None;
        }
        let bounds = bounds.expand(24.0);
        let scale = (view.width() / bounds.width())
            .min(view.height() / bounds.height())
            .clamp(0.2, 1.0);
        Some(TSTransform::new(
            view.center().to_vec2() - bounds.center().to_vec2() * scale,
            scale,
        ))
    }
}

fn snarl_style(theme: &Theme) -> SnarlStyle {
    let c = &theme.colors;
    let mut style = SnarlStyle::new();
    style.node_frame = Some(
        egui::Frame::new()
            .fill(c.node.color())
            .stroke(Stroke::new(1.0, c.widget_hover.color()))
            .corner_radius(theme.spacing.node_rounding)
            .inner_margin(theme.spacing.node_padding),
    );
    style.header_frame = Some(
        egui::Frame::new()
            .fill(c.node_header.color())
            .corner_radius(theme.spacing.node_rounding)
            .inner_margin(theme.spacing.node_padding * 0.5),
    );
    style.bg_frame = Some(egui::Frame::new().fill(c.canvas.color()));
    style.bg_pattern_stroke = Some(Stroke::new(1.0, c.canvas_grid.color()));
    style.select_stoke = Some(Stroke::new(1.0, c.accent.color()));
    style.select_fill = Some(c.selection.color());
    style.collapsible = Some(true);
    // Pins on the frame's edge (as ComfyUI draws them): inside it, snarl's output column
    // reached under the pins and their circles covered the labels' last letters.
    style.pin_placement = Some(egui_snarl::ui::PinPlacement::Edge);
    // Scale 1 = 100 %; text is re-laid out when zoomed rather than drawn magnified.
    style.crisp_magnified_text = Some(false);
    style.min_scale = Some(0.2);
    style.max_scale = Some(2.0);
    style
}

struct Viewer<'a, 'b> {
    bcx: &'a mut BodyContext<'b>,
    search: &'a mut String,
    actions: Vec<Action>,
    to_global: TSTransform,
    fit: Option<TSTransform>,
    /// Ctrl+wheel notches this frame and the screen point to zoom about.
    zoom_step: Option<(i32, Pos2)>,
    rects: BTreeMap<NodeId, egui::Rect>,
    pins: Rc<RefCell<PinRects>>,
}

impl Viewer<'_, '_> {
    fn spec_of(&self, id: NodeId) -> Option<&KindSpec> {
        let node = self.bcx.wf.node(id)?;
        self.bcx.registry.spec(&node.kind)
    }

    fn in_ref(&self, pin: InPinId, snarl: &Snarl<NodeId>) -> Option<PortRef> {
        let id = *snarl.get_node(pin.node)?;
        let port = self.spec_of(id)?.inputs.get(pin.input)?;
        Some(PortRef::new(id, port.name))
    }

    fn out_ref(&self, pin: OutPinId, snarl: &Snarl<NodeId>) -> Option<PortRef> {
        let id = *snarl.get_node(pin.node)?;
        let port = self.spec_of(id)?.outputs.get(pin.output)?;
        Some(PortRef::new(id, port.name))
    }

    fn recorded(&self, info: PinInfo, key: Option<(PortRef, bool)>) -> RecordedPin {
        RecordedPin {
            info,
            key,
            sink: Rc::clone(&self.pins),
        }
    }

    fn out_type(&self, r: &PortRef) -> Option<PortType> {
        Some(self.spec_of(r.node)?.output(&r.port)?.ty)
    }

    fn in_type(&self, r: &PortRef) -> Option<PortType> {
        Some(self.spec_of(r.node)?.input(&r.port)?.ty)
    }

    /// A searchable list of kinds (optionally only those that fit a wire); a click adds one.
    fn kind_menu(
        &mut self,
        ui: &mut Ui,
        pos: Pos2,
        fits: impl Fn(&KindSpec) -> bool,
        wire: Option<(PortRef, PortType, bool)>,
    ) {
        ui.add(
            egui::TextEdit::singleline(self.search)
                .hint_text("search nodes")
                .desired_width(160.0),
        )
        .request_focus();
        let query = self.search.to_lowercase();
        let matching: Vec<&KindSpec> = self
            .bcx
            .registry
            .specs()
            .filter(|spec| fits(spec) && super::palette::matches(spec, &query))
            .collect();
        let mut chosen = None;
        for spec in &matching {
            if ui.button(spec.title).on_hover_text(spec.help).clicked() {
                chosen = Some(spec.name);
            }
        }
        // Enter takes the first match, as in the quick-add popup.
        if ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            chosen = chosen.or(matching.first().map(|s| s.name));
        }
        if matching.is_empty() {
            ui.weak("no node kind fits");
        }
        if let Some(kind) = chosen {
            self.actions.push(Action::AddNode {
                kind: kind.to_string(),
                pos: [pos.x, pos.y],
                wire,
            });
            self.search.clear();
            ui.close();
        }
    }
}

impl SnarlViewer<NodeId> for Viewer<'_, '_> {
    fn current_transform(&mut self, to_global: &mut TSTransform, _snarl: &mut Snarl<NodeId>) {
        if let Some(fit) = self.fit.take() {
            *to_global = fit;
        }
        if let Some((notches, anchor)) = self.zoom_step.take() {
            let scale = stepped_zoom(to_global.scaling, notches);
            // Keep the graph point under the pointer where it is.
            let g = to_global.inverse() * anchor;
            *to_global = TSTransform::new(anchor.to_vec2() - g.to_vec2() * scale, scale);
        }
        self.to_global = *to_global;
    }

    fn final_node_rect(
        &mut self,
        node: SlotId,
        rect: egui::Rect,
        _ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) {
        if let Some(id) = snarl.get_node(node) {
            self.rects.insert(*id, rect);
        }
    }

    fn title(&mut self, node: &NodeId) -> String {
        match self.bcx.wf.node(*node) {
            Some(n) => match (&n.title, self.bcx.registry.spec(&n.kind)) {
                (Some(t), _) => t.clone(),
                (None, Some(spec)) => format!("{} {}", spec.title, n.id),
                (None, None) => format!("{} {} (unknown kind)", n.kind, n.id),
            },
            None => format!("node {node}"),
        }
    }

    fn show_header(
        &mut self,
        node: SlotId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) {
        let Some(id) = snarl.get_node(node).copied() else {
            return;
        };
        // Not selectable text: a click or drag on the title reaches the node (select, move).
        // The kind's help is the title's tooltip: one tooltip at a time, never a node-wide
        // popup on top of a widget's own.
        let help = self.spec_of(id).map_or("", |s| s.help);
        ui.add(egui::Label::new(self.title(&id)).selectable(false))
            .on_hover_text(help);
    }

    fn node_frame(
        &mut self,
        default: egui::Frame,
        node: SlotId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        snarl: &Snarl<NodeId>,
    ) -> egui::Frame {
        let Some(id) = snarl.get_node(node) else {
            return default;
        };
        let c = &self.bcx.theme.colors;
        match self.bcx.runner.status.get(id) {
            Some(NodeStatus::Failed(_)) => default.stroke(Stroke::new(2.5, c.error.color())),
            Some(NodeStatus::Running) => default.stroke(Stroke::new(2.0, c.running.color())),
            _ => default,
        }
    }

    fn inputs(&mut self, node: &NodeId) -> usize {
        self.spec_of(*node).map_or(0, |s| s.inputs.len())
    }

    fn outputs(&mut self, node: &NodeId) -> usize {
        self.spec_of(*node).map_or(0, |s| s.outputs.len())
    }

    fn show_input(
        &mut self,
        pin: &InPin,
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) -> impl SnarlPin + 'static {
        let id = snarl.get_node(pin.id.node).copied();
        let port = id.and_then(|id| self.spec_of(id)?.inputs.get(pin.id.input).cloned());
        let info = match &port {
            Some(p) => {
                let label = if p.required {
                    p.name.to_string()
                } else {
                    format!("{} (optional)", p.name)
                };
                // Never wrapped: a pin label is one short name, and wrapping hid its end.
                ui.add(egui::Label::new(label).extend())
                    .on_hover_text(format!("{}: {}", p.ty, p.help));
                PinInfo::circle().with_fill(self.bcx.theme.pin(p.ty))
            }
            None => PinInfo::circle(),
        };
        self.recorded(
            info,
            id.zip(port).map(|(id, p)| (PortRef::new(id, p.name), true)),
        )
    }

    fn show_output(
        &mut self,
        pin: &OutPin,
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) -> impl SnarlPin + 'static {
        let id = snarl.get_node(pin.id.node).copied();
        let port = id.and_then(|id| self.spec_of(id)?.outputs.get(pin.id.output).cloned());
        let info = match &port {
            Some(p) => {
                // A gap before the pin: zoomed out, egui draws text a little wider than it
                // laid it out, and a right-aligned label would run under its pin.
                ui.add_space(OUTPUT_PIN_GAP);
                ui.add(egui::Label::new(p.name).extend())
                    .on_hover_text(format!("{}: {}", p.ty, p.help));
                PinInfo::circle().with_fill(self.bcx.theme.pin(p.ty))
            }
            None => PinInfo::circle(),
        };
        self.recorded(
            info,
            id.zip(port)
                .map(|(id, p)| (PortRef::new(id, p.name), false)),
        )
    }

    fn has_body(&mut self, _node: &NodeId) -> bool {
        true
    }

    fn show_body(
        &mut self,
        node: SlotId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) {
        let Some(id) = snarl.get_node(node).copied() else {
            return;
        };
        for change in body::node_body(ui, self.bcx, id) {
            self.actions.push(Action::SetParam {
                node: id,
                name: change.name,
                value: change.value,
            });
        }
    }

    fn connect(&mut self, from: &OutPin, to: &InPin, snarl: &mut Snarl<NodeId>) {
        let (Some(f), Some(t)) = (self.out_ref(from.id, snarl), self.in_ref(to.id, snarl)) else {
            return;
        };
        match super::doc::check_link(self.bcx.registry, self.bcx.wf, &f, &t) {
            Ok(()) => self.actions.push(Action::Connect { from: f, to: t }),
            Err(reason) => self.actions.push(Action::Notify(Notice {
                error: true,
                text: format!("Cannot connect: {reason}"),
            })),
        }
    }

    fn disconnect(&mut self, _from: &OutPin, to: &InPin, snarl: &mut Snarl<NodeId>) {
        if let Some(t) = self.in_ref(to.id, snarl) {
            self.actions.push(Action::Disconnect { to: t });
        }
    }

    fn drop_inputs(&mut self, pin: &InPin, snarl: &mut Snarl<NodeId>) {
        if let Some(t) = self.in_ref(pin.id, snarl) {
            self.actions.push(Action::Disconnect { to: t });
        }
    }

    fn drop_outputs(&mut self, pin: &OutPin, snarl: &mut Snarl<NodeId>) {
        if let Some(f) = self.out_ref(pin.id, snarl) {
            self.actions.push(Action::DisconnectOutput { from: f });
        }
    }

    fn has_graph_menu(&mut self, _pos: Pos2, _snarl: &mut Snarl<NodeId>) -> bool {
        true
    }

    fn show_graph_menu(&mut self, pos: Pos2, ui: &mut Ui, _snarl: &mut Snarl<NodeId>) {
        ui.label("Add node");
        self.kind_menu(ui, pos, |_| true, None);
    }

    fn has_dropped_wire_menu(&mut self, _src: AnyPins, _snarl: &mut Snarl<NodeId>) -> bool {
        true
    }

    fn show_dropped_wire_menu(
        &mut self,
        pos: Pos2,
        ui: &mut Ui,
        src: AnyPins,
        snarl: &mut Snarl<NodeId>,
    ) {
        // The first dragged pin decides which kinds fit.
        let (port, ty, from_output) = match src {
            AnyPins::Out(pins) => {
                let Some(r) = pins.first().and_then(|p| self.out_ref(*p, snarl)) else {
                    return;
                };
                let Some(ty) = self.out_type(&r) else { return };
                (r, ty, true)
            }
            AnyPins::In(pins) => {
                let Some(r) = pins.first().and_then(|p| self.in_ref(*p, snarl)) else {
                    return;
                };
                let Some(ty) = self.in_type(&r) else { return };
                (r, ty, false)
            }
        };
        ui.label(if from_output {
            format!("Add a node that takes {ty}")
        } else {
            format!("Add a node that gives {ty}")
        });
        self.kind_menu(
            ui,
            pos,
            move |spec| {
                if from_output {
                    spec.inputs.iter().any(|p| p.ty == ty)
                } else {
                    spec.outputs.iter().any(|p| p.ty == ty)
                }
            },
            Some((port, ty, from_output)),
        );
    }

    fn has_node_menu(&mut self, _node: &NodeId) -> bool {
        true
    }

    fn show_node_menu(
        &mut self,
        node: SlotId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) {
        let Some(id) = snarl.get_node(node).copied() else {
            return;
        };
        if ui.button("Duplicate").clicked() {
            self.actions.push(Action::Duplicate(vec![id]));
            ui.close();
        }
        if ui.button("Delete").clicked() {
            self.actions.push(Action::Remove(vec![id]));
            ui.close();
        }
    }
}
