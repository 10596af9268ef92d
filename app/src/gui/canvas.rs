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
        let mut viewer = Viewer {
            pins: Rc::clone(&self.pins),
            bcx,
            search,
            actions: Vec::new(),
            to_global: self.to_global,
            fit,
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
        let mut any = false;
        for spec in self.bcx.registry.specs() {
            if !fits(spec) || !super::palette::matches(spec, &query) {
                continue;
            }
            any = true;
            if ui.button(spec.title).on_hover_text(spec.help).clicked() {
                self.actions.push(Action::AddNode {
                    kind: spec.name.to_string(),
                    pos: [pos.x, pos.y],
                    wire: wire.clone(),
                });
                self.search.clear();
                ui.close();
            }
        }
        if !any {
            ui.weak("no node kind fits");
        }
    }
}

impl SnarlViewer<NodeId> for Viewer<'_, '_> {
    fn current_transform(&mut self, to_global: &mut TSTransform, _snarl: &mut Snarl<NodeId>) {
        if let Some(fit) = self.fit.take() {
            *to_global = fit;
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
        ui.add(egui::Label::new(self.title(&id)).selectable(false));
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
                ui.label(label)
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
                ui.label(p.name)
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

    fn has_on_hover_popup(&mut self, _node: &NodeId) -> bool {
        true
    }

    fn show_on_hover_popup(
        &mut self,
        node: SlotId,
        _inputs: &[InPin],
        _outputs: &[OutPin],
        ui: &mut Ui,
        snarl: &mut Snarl<NodeId>,
    ) {
        if let Some(spec) = snarl.get_node(node).and_then(|id| self.spec_of(*id)) {
            ui.label(spec.help);
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
