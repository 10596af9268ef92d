//! The editor application: menus, toolbar, palette, canvas, shortcuts, and the glue between
//! the document, the canvas view and the executor (the file flow and its dialogs are in
//! `app/dialogs.rs`).

use super::body::{BodyContext, SAMPLER};
use super::canvas::{Action, Canvas};
use super::chooser::{Chooser, Waiting};
use super::compare_view::CompareView;
use super::doc::{Clip, EditorDoc};
use super::files::{self, Settings};
use super::history::History;
use super::notify::Toasts;
use super::palette::{self, KindPayload};
use super::runner::{NodeStatus, Runner};
use super::theme::{Theme, THEMES};
use cachedit_nodes::device::available_devices;
use cachedit_nodes::graph::document::{NodeId, PortRef, Value, Workflow};
use cachedit_nodes::graph::ron_io::{comments_of, save_workflow_atomic_with_header};
use cachedit_nodes::image::png_io::read_png;
use cachedit_nodes::registry::Registry;
use egui::{Key, Modifiers, Ui};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod dialogs;
mod history_ui;

pub use history_ui::OPEN_COMPARE_VIEW;

/// Seconds between autosaves of unsaved work.
const AUTOSAVE_SECS: f64 = 20.0;

/// How the editor is set up (tests point everything at temporary folders).
#[derive(Debug, Clone)]
pub struct EditorOptions {
    /// Settings, recent files and autosave.
    pub config_dir: PathBuf,
    /// Where Save Image writes.
    pub output_dir: PathBuf,
    /// Hide wall-clock numbers (snapshot tests).
    pub hide_times: bool,
    /// The file chooser for Open… and Save as… (native where the desktop has one).
    pub chooser: Chooser,
}

impl Default for EditorOptions {
    fn default() -> Self {
        EditorOptions {
            config_dir: files::config_dir(),
            output_dir: std::env::var_os("CACHEDIT_OUTPUT_DIR")
                .map_or_else(|| PathBuf::from("out"), PathBuf::from),
            hide_times: false,
            chooser: Chooser::from_env(),
        }
    }
}

/// What to do once the unsaved-changes question is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    New,
    Open(PathBuf),
    Quit,
}

/// The modal dialog on screen, if any.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    Open {
        path: String,
    },
    SaveAs {
        path: String,
        /// What to do once saved (the unsaved-changes question asked for a save first).
        then: Option<Pending>,
    },
    Unsaved(Pending),
    Recover(Box<Workflow>),
    /// Saving over `path` would drop the comments inside its workflow.
    DropComments {
        path: PathBuf,
        then: Option<Pending>,
    },
    /// A file could not be opened; the message names it and the line/column.
    OpenError(String),
}

/// The whole editor state.
pub struct EditorApp {
    pub registry: Registry,
    pub doc: EditorDoc,
    pub canvas: Canvas,
    pub runner: Runner,
    pub theme: Theme,
    pub settings: Settings,
    pub toasts: Toasts,
    pub dialog: Option<Dialog>,
    pub options: EditorOptions,
    clip: Option<Clip>,
    palette_search: String,
    menu_search: String,
    images: HashMap<NodeId, egui::TextureHandle>,
    image_paths: HashMap<NodeId, PathBuf>,
    previews_shown: HashMap<NodeId, std::sync::Arc<cachedit_nodes::image::RgbImage>>,
    theme_dirty: bool,
    fonts_installed: bool,
    last_autosave: (f64, u64),
    allow_close: bool,
    /// The double-click quick-add popup: where it opened (screen) and its search text.
    pub quick_add: Option<(egui::Pos2, String)>,
    /// Fit the view again when the first run of a newly opened document ends (its nodes
    /// have grown by then: images, stats).
    fit_after_run: bool,
    devices: Vec<String>,
    title: String,
    /// A native file dialog open now, and what follows a save made through it.
    waiting: Option<Waiting<Option<Pending>>>,
    /// The large comparison view (a window over the canvas).
    pub compare_view: CompareView,
    /// Finished comparisons and cached Sampler runs, kept in the settings folder.
    pub history: History,
    pub history_open: bool,
    /// History entries ticked to be compared (two at most).
    pub history_picked: Vec<String>,
}

impl EditorApp {
    pub fn new(options: EditorOptions) -> Self {
        let mut toasts = Toasts::default();
        let settings = Settings::load(&options.config_dir).unwrap_or_else(|e| {
            toasts.error(format!("Settings not read, using defaults: {e}"));
            Settings::default()
        });
        let theme = Theme::builtin(&settings.theme).unwrap_or_else(|e| {
            toasts.error(e);
            Theme::default()
        });
        let dialog =
            files::read_autosave(&options.config_dir).map(|wf| Dialog::Recover(Box::new(wf)));
        let history = History::open(&options.config_dir);
        let mut compare_view = CompareView::default();
        compare_view.hide_times = options.hide_times;
        EditorApp {
            compare_view,
            history,
            history_open: false,
            history_picked: Vec::new(),
            registry: Registry::builtin(),
            doc: EditorDoc::default(),
            canvas: Canvas::default(),
            runner: Runner::new(options.output_dir.clone()),
            theme,
            settings,
            toasts,
            dialog,
            options,
            clip: None,
            palette_search: String::new(),
            menu_search: String::new(),
            images: HashMap::new(),
            image_paths: HashMap::new(),
            previews_shown: HashMap::new(),
            theme_dirty: true,
            fonts_installed: false,
            last_autosave: (0.0, 0),
            allow_close: false,
            fit_after_run: false,
            quick_add: None,
            devices: available_devices(),
            title: String::new(),
            waiting: None,
        }
    }

    // ----- commands (the menus, shortcuts and tests all go through these) -----

    /// Replaces the document with a fresh empty one.
    pub fn new_document(&mut self) {
        self.doc = EditorDoc::default();
        self.after_document_change();
    }

    /// Opens a `.ron` workflow (or a PNG the app wrote). On failure the editor keeps the
    /// current document and shows the message, which names the file and line/column.
    pub fn open_path(&mut self, path: &Path) -> Result<(), String> {
        match files::open_any(path) {
            Ok(wf) => {
                let is_png = path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("png"));
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                // A PNG's or a history entry's workflow opens untitled: saving it never
                // writes into the image or the history.
                let is_copy = is_png || path.starts_with(self.history.dir());
                if is_copy {
                    self.doc = EditorDoc::new(wf, None);
                    self.doc.mark_unsaved();
                    self.toasts
                        .info(format!("Restored the workflow from {}", path.display()));
                } else if files::is_example(path) {
                    // An example opens as an untitled copy: Save asks where, and the
                    // example stays as it ships.
                    self.doc = EditorDoc::example_copy(wf, name);
                    self.settings.add_recent(path);
                    self.save_settings();
                } else {
                    self.doc = EditorDoc::new(wf, Some(path.to_path_buf()));
                    if let Ok(text) = std::fs::read_to_string(path) {
                        let comments = comments_of(&text);
                        self.doc.header = comments.header;
                        self.doc.body_comments = comments.in_body;
                    }
                    self.settings.add_recent(path);
                    self.save_settings();
                }
                self.after_document_change();
                Ok(())
            }
            Err(e) => {
                self.toasts.error(format!("Could not open: {e}"));
                self.dialog = Some(Dialog::OpenError(e.clone()));
                Err(e)
            }
        }
    }

    /// Saves to `path` atomically and remembers it.
    pub fn save_to(&mut self, path: &Path) -> Result<(), String> {
        // The leading comments belong to the file they came from, not to a new one.
        let header = if self.doc.path.as_deref() == Some(path) {
            self.doc.header.clone()
        } else {
            String::new()
        };
        save_workflow_atomic_with_header(path, self.doc.workflow(), &header).map_err(|e| {
            let msg = format!("Could not save: {e}");
            self.toasts.error(msg.clone());
            msg
        })?;
        self.doc.header = header;
        self.doc.mark_saved(path.to_path_buf());
        self.settings.add_recent(path);
        self.save_settings();
        files::clear_autosave(&self.options.config_dir);
        self.toasts.info(format!("Saved {}", path.display()));
        Ok(())
    }

    /// Save: to the document's file, or ask for one.
    pub fn save(&mut self) {
        self.save_or_ask(None);
    }

    fn after_document_change(&mut self) {
        self.canvas = Canvas::default();
        self.canvas.request_fit();
        self.fit_after_run = true;
        self.images.clear();
        self.image_paths.clear();
        self.previews_shown.clear();
    }

    fn save_settings(&mut self) {
        if let Err(e) = self.settings.save(&self.options.config_dir) {
            self.toasts.error(format!("Settings not saved: {e}"));
        }
    }

    /// Switches the theme and remembers the choice.
    pub fn set_theme(&mut self, name: &str) {
        match Theme::builtin(name) {
            Ok(t) => {
                self.theme = t;
                self.theme_dirty = true;
                self.settings.theme = name.to_string();
                self.save_settings();
            }
            Err(e) => self.toasts.error(e),
        }
    }

    /// Adds a node of `kind` from the palette in free space nearest the middle of the view.
    pub fn add_from_palette(&mut self, kind: &str) -> NodeId {
        let wf = self.doc.workflow();
        let size = self.canvas.size_of_kind(wf, kind);
        let centre = self
            .canvas
            .view_center()
            .unwrap_or(egui::pos2(300.0, 200.0));
        let at = self.canvas.place(wf, kind, centre - size / 2.0);
        self.doc.add_node(kind, [at.x, at.y])
    }

    /// Duplicates nodes beside the originals, in free space (one undo step).
    pub fn duplicate(&mut self, ids: &[NodeId]) -> Vec<NodeId> {
        let clip = self.doc.copy(ids);
        let wf = self.doc.workflow();
        let occupied = self.canvas.occupied(wf);
        // `occupied` follows the document's node order.
        let bounds = wf
            .nodes
            .iter()
            .zip(&occupied)
            .filter(|(n, _)| ids.contains(&n.id))
            .fold(egui::Rect::NOTHING, |b, (_, r)| b.union(*r));
        if !bounds.is_positive() {
            return self.doc.paste(&clip, [40.0, 40.0]);
        }
        let wanted = bounds.translate(egui::vec2(40.0, 40.0));
        let at = super::canvas::free_spot(&occupied, wanted);
        self.doc
            .paste(&clip, [at.x - bounds.min.x, at.y - bounds.min.y])
    }

    /// Links two ports through the same check the canvas uses; a refusal is notified.
    pub fn connect(&mut self, from: PortRef, to: PortRef) -> Result<(), String> {
        self.doc
            .connect(&self.registry, from, to)
            .inspect_err(|e| self.toasts.error(format!("Cannot connect: {e}")))
    }

    /// Sends the document to the executor (the UI does not wait).
    pub fn run(&mut self) {
        let wf = self.doc.workflow().clone();
        match self.runner.start(&wf) {
            Ok(_) => {
                self.image_paths.clear();
                self.previews_shown.clear();
            }
            Err(e) => self.toasts.error(format!("Cannot run: {e}")),
        }
    }

    pub fn cancel(&mut self) {
        if self.runner.running {
            self.runner.cancel();
            self.toasts.info("Cancelling after the current step…");
        }
    }

    pub fn undo(&mut self) {
        self.doc.undo();
    }

    pub fn redo(&mut self) {
        self.doc.redo();
    }

    /// Copies the nodes (and the links among them); returns the clip as text for the system
    /// clipboard.
    pub fn copy_selection(&mut self, ids: &[NodeId]) -> Option<String> {
        if ids.is_empty() {
            return None;
        }
        let clip = self.doc.copy(ids);
        let text = clip.to_text();
        self.clip = Some(clip);
        text
    }

    /// Pastes the last copied nodes, or nodes copied in another editor window (`text` from
    /// the system clipboard), with their top-left corner at `at` (graph coordinates) or just
    /// below and right of where they were.
    pub fn paste(&mut self, text: Option<&str>, at: Option<egui::Pos2>) -> Vec<NodeId> {
        let Some(mut clip) = text.and_then(Clip::from_text).or_else(|| self.clip.clone()) else {
            return Vec::new();
        };
        let before = clip.nodes.len();
        clip.nodes.retain(|n| self.registry.spec(&n.kind).is_some());
        if clip.nodes.len() < before {
            self.toasts.error(format!(
                "{} pasted node(s) are of kinds this build does not know; left out",
                before - clip.nodes.len()
            ));
        }
        let offset = match (at, clip.origin()) {
            (Some(at), Some(o)) => [at.x - o[0], at.y - o[1]],
            _ => [40.0, 40.0],
        };
        self.doc.paste(&clip, offset)
    }

    /// Applies one canvas action to the document.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::AddNode { kind, pos, wire } => {
                // Near where the menu opened, but never on top of another node.
                let at = self
                    .canvas
                    .place(self.doc.workflow(), &kind, egui::pos2(pos[0], pos[1]));
                let pos = [at.x, at.y];
                let spec = self.registry.spec(&kind).cloned();
                let registry = &self.registry;
                // The node and its wire are one undo step.
                let refused = self.doc.group(|doc| {
                    let id = doc.add_node(&kind, pos);
                    let (Some((port, ty, from_output)), Some(spec)) = (wire, spec) else {
                        return None;
                    };
                    let link = if from_output {
                        let input = spec.inputs.iter().find(|p| p.ty == ty);
                        input.map(|p| (port, PortRef::new(id, p.name)))
                    } else {
                        let output = spec.outputs.iter().find(|p| p.ty == ty);
                        output.map(|p| (PortRef::new(id, p.name), port))
                    };
                    let (from, to) = link?;
                    doc.connect(registry, from, to).err()
                });
                if let Some(reason) = refused {
                    self.toasts.error(format!("Cannot connect: {reason}"));
                }
            }
            Action::Connect { from, to } => {
                let _ = self.connect(from, to);
            }
            Action::Disconnect { to } => self.doc.disconnect(&to),
            Action::DisconnectOutput { from } => self.doc.disconnect_output(&from),
            Action::SetParam { node, name, value } => self.doc.set_param(node, &name, value),
            Action::Remove(ids) => self.doc.remove_nodes(&ids),
            Action::Duplicate(ids) => {
                self.duplicate(&ids);
            }
            Action::Notify(n) => self.toasts.push(n),
        }
    }

    /// Sets the `device` param of every Load Model node (the device picker).
    pub fn set_device(&mut self, device: &str) {
        let changes: Vec<(NodeId, &str, Value)> = self
            .doc
            .workflow()
            .nodes
            .iter()
            .filter(|n| n.kind == "LoadModel")
            .map(|n| (n.id, "device", Value::Text(device.to_string())))
            .collect();
        self.doc.set_params(&changes);
    }

    fn current_device(&self) -> String {
        self.doc
            .workflow()
            .nodes
            .iter()
            .find(|n| n.kind == "LoadModel")
            .and_then(|n| match n.params.get("device") {
                Some(Value::Text(d)) => Some(d.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "cpu".into())
    }

    // ----- per frame -----

    /// Work done every frame before drawing: events, images, autosave, shortcuts, drops.
    pub fn logic(&mut self, ctx: &egui::Context) {
        if !self.fonts_installed {
            super::fonts::install(ctx);
            self.fonts_installed = true;
        }
        if self.theme_dirty {
            self.theme.apply(ctx);
            ctx.set_theme(if self.theme.dark {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            });
            self.theme_dirty = false;
        }
        let was_running = self.runner.running;
        for notice in self.runner.poll() {
            self.toasts.push(notice);
        }
        if was_running && !self.runner.running && self.fit_after_run {
            self.fit_after_run = false;
            self.canvas.request_fit();
        }
        if self.runner.running {
            ctx.request_repaint_after(std::time::Duration::from_millis(40));
        }
        self.record_finished();
        self.load_images(ctx);
        self.poll_chooser(ctx);
        self.autosave(ctx);
        self.shortcuts(ctx);
        self.dropped_files(ctx);
        self.close_request(ctx);
        let title = format!(
            "{}{} — CacheDiT Studio",
            self.doc.display_name(),
            if self.doc.is_dirty() { " •" } else { "" }
        );
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    fn load_images(&mut self, ctx: &egui::Context) {
        // Live previews of the samplers.
        for (node, img) in &self.runner.previews {
            if self
                .previews_shown
                .get(node)
                .is_some_and(|p| std::sync::Arc::ptr_eq(p, img))
            {
                continue;
            }
            self.previews_shown.insert(*node, img.clone());
            let color =
                egui::ColorImage::from_rgb([img.width as usize, img.height as usize], &img.pixels);
            let tex = ctx.load_texture(
                format!("preview-{}", node.0),
                color,
                egui::TextureOptions::NEAREST,
            );
            self.images.insert(*node, tex);
        }
        let wf = self.doc.workflow().clone();
        for (node, path) in &self.runner.files {
            if self.image_paths.get(node) == Some(path) {
                continue;
            }
            self.image_paths.insert(*node, path.clone());
            let Ok(img) = read_png(path) else { continue };
            let color =
                egui::ColorImage::from_rgb([img.width as usize, img.height as usize], &img.pixels);
            let tex = ctx.load_texture(
                format!("image-{}", node.0),
                color,
                egui::TextureOptions::NEAREST,
            );
            // The Sampler that made the image shows it too.
            if let Some(l) = wf
                .links
                .iter()
                .find(|l| l.to.node == *node && l.to.port == "image")
            {
                if wf.node(l.from.node).is_some_and(|n| n.kind == SAMPLER) {
                    self.images.insert(l.from.node, tex.clone());
                }
            }
            self.images.insert(*node, tex);
        }
    }

    fn autosave(&mut self, ctx: &egui::Context) {
        let now = ctx.input(|i| i.time);
        let (last, rev) = self.last_autosave;
        if self.doc.is_dirty() && self.doc.revision != rev && now - last > AUTOSAVE_SECS {
            self.last_autosave = (now, self.doc.revision);
            if let Err(e) = files::write_autosave(&self.options.config_dir, self.doc.workflow()) {
                self.toasts.error(format!("Autosave failed: {e}"));
            }
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        if self.dialog.is_some() || self.waiting.is_some() {
            return;
        }
        let typing = ctx.memory(|m| m.focused().is_some());
        let cmd = Modifiers::COMMAND;
        let shift_cmd = Modifiers::COMMAND | Modifiers::SHIFT;
        let pressed = |key, m| ctx.input_mut(|i| i.consume_key(m, key));
        if pressed(Key::Enter, cmd) {
            self.run();
        }
        if pressed(Key::S, shift_cmd) {
            self.ask_save_as(None);
        }
        if pressed(Key::S, cmd) {
            self.save();
        }
        if pressed(Key::O, cmd) {
            self.ask_open();
        }
        if pressed(Key::N, cmd) {
            self.guard_unsaved(Pending::New);
        }
        if typing {
            return;
        }
        if pressed(Key::Escape, Modifiers::NONE) {
            self.cancel();
        }
        if pressed(Key::Z, shift_cmd) || pressed(Key::Y, cmd) {
            self.redo();
        }
        if pressed(Key::Z, cmd) {
            self.undo();
        }
        if pressed(Key::F, Modifiers::NONE) {
            self.canvas.request_fit();
        }
        if pressed(Key::C, Modifiers::NONE) {
            if self.compare_view.open {
                self.compare_view.open = false;
            } else {
                self.open_first_comparison();
            }
        }
        if pressed(Key::H, Modifiers::NONE) {
            self.history_open = !self.history_open;
        }
        let selected = self.canvas.selected(ctx);
        if pressed(Key::Delete, Modifiers::NONE) || pressed(Key::Backspace, Modifiers::NONE) {
            self.doc.remove_nodes(&selected);
        }
        if pressed(Key::D, cmd) {
            self.apply(Action::Duplicate(selected.clone()));
        }
        // A desktop turns Ctrl+C / Ctrl+V into Copy and Paste events (Paste only when the
        // system clipboard holds text, which a copy here makes sure of); raw keys also count.
        let (copy, paste) = ctx.input(|i| {
            let copy = i.events.iter().any(|e| matches!(e, egui::Event::Copy))
                || (i.key_pressed(Key::C) && i.modifiers.command);
            let pasted = i.events.iter().find_map(|e| match e {
                egui::Event::Paste(text) => Some(Some(text.clone())),
                _ => None,
            });
            let paste = pasted.or((i.key_pressed(Key::V) && i.modifiers.command).then_some(None));
            (copy, paste)
        });
        if copy {
            if let Some(text) = self.copy_selection(&selected) {
                ctx.copy_text(text);
            }
        }
        if let Some(text) = paste {
            let at = ctx
                .input(|i| i.pointer.hover_pos())
                .filter(|p| self.canvas.shows(*p))
                .map(|p| self.canvas.to_graph(p));
            self.paste(text.as_deref(), at);
        }
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(path) = dropped.into_iter().next() {
            self.guard_unsaved(Pending::Open(path));
        }
    }

    fn close_request(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) {
            if self.allow_close || !self.doc.is_dirty() {
                files::clear_autosave(&self.options.config_dir);
            } else {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                self.dialog = Some(Dialog::Unsaved(Pending::Quit));
            }
        }
        if self.allow_close {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// Draws the editor.
    pub fn ui(&mut self, ui: &mut Ui) {
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("palette")
            .default_size(170.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    if let Some(kind) =
                        palette::palette(ui, &self.registry, &mut self.palette_search)
                    {
                        self.add_from_palette(&kind);
                    }
                })
            });
        egui::CentralPanel::no_frame().show(ui, |ui| self.canvas_ui(ui));
        self.compare_window(ui.ctx());
        self.history_window(ui.ctx());
        self.dialogs(ui.ctx());
        self.toasts.show(ui.ctx(), &self.theme);
    }

    fn canvas_ui(&mut self, ui: &mut Ui) {
        self.canvas.sync(self.doc.workflow(), &self.registry);
        let wf = self.doc.workflow().clone();
        let mut bcx = BodyContext {
            wf: &wf,
            registry: &self.registry,
            theme: &self.theme,
            runner: &self.runner,
            images: &self.images,
            hide_times: self.options.hide_times,
        };
        let rect = ui.max_rect();
        let actions = self.canvas.show(ui, &mut bcx, &mut self.menu_search);
        for a in actions {
            self.apply(a);
        }
        let moved = self.canvas.moved();
        self.doc.move_nodes(&moved);
        if !ui.ctx().input(|i| i.pointer.any_down()) {
            self.doc.end_merge();
        }
        // A kind dragged from the palette and released over the canvas.
        if ui.ctx().input(|i| i.pointer.any_released()) {
            if let Some(payload) = egui::DragAndDrop::take_payload::<KindPayload>(ui.ctx()) {
                let pos = ui
                    .ctx()
                    .input(|i| i.pointer.interact_pos())
                    .filter(|p| rect.contains(*p));
                if let Some(p) = pos {
                    let at = self.canvas.to_graph(p);
                    self.doc.add_node(&payload.0, [at.x, at.y]);
                }
            }
        }
        // Double-click on empty canvas: a searchable quick-add popup (as in ComfyUI).
        let double = ui.ctx().input(|i| {
            i.pointer
                .button_double_clicked(egui::PointerButton::Primary)
                .then(|| i.pointer.interact_pos())
                .flatten()
        });
        let opened = double.filter(|p| rect.contains(*p) && !self.canvas.node_at(*p));
        if let Some(p) = opened {
            self.quick_add = Some((p, String::new()));
        }
        self.quick_add_ui(ui.ctx(), opened.is_some());
        if self.doc.workflow().nodes.is_empty() {
            ui.put(
                egui::Rect::from_center_size(rect.center(), egui::vec2(420.0, 60.0)),
                egui::Label::new(
                    "Empty workflow: add nodes from the palette, right-click the canvas, \
                     or open an example from File → Examples.",
                ),
            );
        }
    }

    fn quick_add_ui(&mut self, ctx: &egui::Context, just_opened: bool) {
        let Some((at, mut search)) = self.quick_add.take() else {
            return;
        };
        let mut chosen = None;
        let area = egui::Area::new(egui::Id::new("quick-add"))
            .fixed_pos(at)
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.label("Add node");
                    ui.add(
                        egui::TextEdit::singleline(&mut search)
                            .hint_text("search nodes")
                            .desired_width(180.0),
                    )
                    .request_focus();
                    let query = search.to_lowercase();
                    let matching: Vec<_> = self
                        .registry
                        .specs()
                        .filter(|s| palette::matches(s, &query))
                        .map(|s| (s.name, s.title, s.help))
                        .collect();
                    for (name, title, help) in &matching {
                        if ui.button(*title).on_hover_text(*help).clicked() {
                            chosen = Some(name.to_string());
                        }
                    }
                    if ui.input(|i| i.key_pressed(Key::Enter)) {
                        chosen = matching.first().map(|m| m.0.to_string());
                    }
                })
            });
        // The double-click that opened it is not a click elsewhere.
        let dismissed = !just_opened
            && (ctx.input(|i| i.key_pressed(Key::Escape)) || area.response.clicked_elsewhere());
        match chosen {
            Some(kind) => {
                let g = self.canvas.to_graph(at);
                self.doc.add_node(&kind, [g.x, g.y]);
            }
            None if !dismissed => self.quick_add = Some((at, search)),
            None => {}
        }
    }

    fn menu_bar(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("New").clicked() {
                    self.guard_unsaved(Pending::New);
                }
                if ui.button("Open…").clicked() {
                    self.ask_open();
                }
                ui.menu_button("Open recent", |ui| {
                    if self.settings.recent.is_empty() {
                        ui.weak("nothing yet");
                    }
                    for p in self.settings.recent.clone() {
                        if ui.button(p.display().to_string()).clicked() {
                            self.guard_unsaved(Pending::Open(p));
                        }
                    }
                });
                ui.menu_button("Examples", |ui| {
                    for p in files::examples() {
                        let name = p
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                        if ui.button(name).clicked() {
                            self.guard_unsaved(Pending::Open(p));
                        }
                    }
                });
                ui.separator();
                if ui.button("Save").clicked() {
                    self.save();
                }
                if ui.button("Save as…").clicked() {
                    self.ask_save_as(None);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    self.guard_unsaved(Pending::Quit);
                }
            });
            ui.menu_button("Edit", |ui| {
                if ui
                    .add_enabled(self.doc.can_undo(), egui::Button::new("Undo"))
                    .clicked()
                {
                    self.undo();
                }
                if ui
                    .add_enabled(self.doc.can_redo(), egui::Button::new("Redo"))
                    .clicked()
                {
                    self.redo();
                }
                ui.separator();
                let selected = self.canvas.selected(ui.ctx());
                if ui.button("Duplicate selection").clicked() {
                    self.apply(Action::Duplicate(selected.clone()));
                }
                if ui.button("Copy selection").clicked() {
                    if let Some(text) = self.copy_selection(&selected) {
                        ui.ctx().copy_text(text);
                    }
                }
                if ui.button("Paste").clicked() {
                    self.paste(None, None);
                }
                if ui.button("Delete selection").clicked() {
                    self.doc.remove_nodes(&selected);
                }
            });
            ui.menu_button("View", |ui| {
                if ui.button("Fit all nodes").on_hover_text("F").clicked() {
                    self.canvas.request_fit();
                }
                if ui
                    .button("Comparison view")
                    .on_hover_text("C: the grid, A/B and speed–quality scatter of a Compare node")
                    .clicked()
                {
                    self.open_first_comparison();
                }
                if ui.button("Run history").on_hover_text("H").clicked() {
                    self.history_open = true;
                }
                ui.menu_button("Theme", |ui| {
                    for (name, _) in THEMES {
                        let on = self.settings.theme == *name;
                        if ui.radio(on, *name).clicked() {
                            self.set_theme(name);
                        }
                    }
                });
            });
            ui.menu_button("Help", |ui| {
                ui.label("Ctrl+Enter run · Esc cancel · Ctrl+Z / Ctrl+Y undo/redo");
                ui.label("Ctrl+C / Ctrl+V copy/paste · Ctrl+D duplicate · Del delete");
                ui.label("Ctrl+S save · Ctrl+O open · F fit view · right-click canvas: add node");
                ui.label("C comparison view · H run history · Space (A/B view) show B");
                ui.label("Drop a .ron, or a PNG written by Save Image, to open its workflow");
            });
        });
    }

    fn toolbar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let running = self.runner.running;
            if ui
                .add_enabled(!running, egui::Button::new("▶ Run"))
                .on_hover_text("Ctrl+Enter")
                .clicked()
            {
                self.run();
            }
            if ui
                .add_enabled(running, egui::Button::new("■ Cancel"))
                .on_hover_text("Esc: stops between steps")
                .clicked()
            {
                self.cancel();
            }
            ui.separator();
            ui.label("Device");
            let current = self.current_device();
            let mut chosen = current.clone();
            egui::ComboBox::from_id_salt("device")
                .selected_text(chosen.clone())
                .show_ui(ui, |ui| {
                    for d in &self.devices {
                        ui.selectable_value(&mut chosen, d.clone(), d);
                    }
                });
            if chosen != current {
                self.set_device(&chosen);
            }
            let cuda = if cfg!(feature = "cuda") {
                if self.devices.len() > 1 {
                    format!("CUDA: {} device(s)", self.devices.len() - 1)
                } else {
                    "CUDA build, no device found".to_string()
                }
            } else {
                "CPU build (rebuild with --features cuda for GPUs)".to_string()
            };
            ui.weak(cuda);
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.label(format!(
                "{}{}",
                self.doc.display_name(),
                if self.doc.is_dirty() {
                    " (unsaved)"
                } else {
                    ""
                }
            ));
            ui.separator();
            ui.label(format!("{} nodes", self.doc.workflow().nodes.len()));
            ui.separator();
            if self.runner.running {
                ui.spinner();
                ui.label("running");
            } else if let Some((outcome, ms)) = self.runner.outcome {
                let text = match outcome {
                    cachedit_nodes::exec::events::RunOutcome::Completed
                        if self.options.hide_times =>
                    {
                        "last run: completed".to_string()
                    }
                    cachedit_nodes::exec::events::RunOutcome::Completed => {
                        format!("last run: completed in {ms:.0} ms")
                    }
                    cachedit_nodes::exec::events::RunOutcome::Cancelled => {
                        "last run: cancelled".to_string()
                    }
                    cachedit_nodes::exec::events::RunOutcome::Failed => {
                        "last run: failed".to_string()
                    }
                };
                ui.label(text);
            }
            let failed = self
                .runner
                .status
                .values()
                .filter(|s| matches!(s, NodeStatus::Failed(_)))
                .count();
            if failed > 0 {
                ui.colored_label(
                    self.theme.colors.error.color(),
                    format!("{failed} node(s) failed"),
                );
            }
        });
    }
}

impl eframe::App for EditorApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        EditorApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        EditorApp::ui(self, ui);
    }
}
