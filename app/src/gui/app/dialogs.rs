//! The file flow of the editor: Open… and Save as… through the native or in-app chooser, the
//! unsaved-changes question and what follows it, and the modal dialogs.

use super::{Dialog, EditorApp, Pending};
use crate::gui::chooser::{self, Answer, Chooser, Purpose, Request, Waiting};
use crate::gui::doc::EditorDoc;
use crate::gui::files;
use egui::Key;
use std::path::{Path, PathBuf};

/// The file name Save as… suggests for a document that has none yet.
const NEW_FILE_NAME: &str = "my_workflow.ron";

impl EditorApp {
    /// Open…: the native dialog, or the in-app one.
    pub fn ask_open(&mut self) {
        let start_dir = self
            .doc
            .path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(files::workflows_dir);
        let request = Request {
            purpose: Purpose::Open,
            start_dir,
            file_name: None,
        };
        self.ask(request, None);
    }

    /// Save as…: the native dialog, or the in-app one; `then` runs after a successful save.
    pub fn ask_save_as(&mut self, then: Option<Pending>) {
        // Not the examples' folder: whatever is saved there opens as an example copy.
        let name = self.doc.example.as_deref().unwrap_or(NEW_FILE_NAME);
        let default = files::save_dir().join(name);
        let path = self.doc.path.clone().unwrap_or(default);
        let request = Request {
            purpose: Purpose::SaveAs,
            start_dir: path
                .parent()
                .map_or_else(files::save_dir, Path::to_path_buf),
            file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        };
        self.ask(request, then);
    }

    fn ask(&mut self, request: Request, then: Option<Pending>) {
        match self.options.chooser.clone() {
            Chooser::Native(pick) => {
                if self.waiting.is_none() {
                    self.waiting = Some(Waiting::spawn(pick, request, then));
                }
            }
            Chooser::Builtin => self.builtin_dialog(&request, then),
        }
    }

    fn builtin_dialog(&mut self, request: &Request, then: Option<Pending>) {
        self.dialog = Some(match request.purpose {
            Purpose::Open => Dialog::Open {
                path: String::new(),
            },
            Purpose::SaveAs => {
                let name = request.file_name.as_deref().unwrap_or(NEW_FILE_NAME);
                Dialog::SaveAs {
                    path: request.start_dir.join(name).display().to_string(),
                    then,
                }
            }
        });
    }

    /// A native dialog's answer, once it comes: open or save what was chosen; if no dialog
    /// could be shown, switch to the in-app one for the rest of the session.
    pub(super) fn poll_chooser(&mut self, ctx: &egui::Context) {
        let Some(waiting) = &self.waiting else {
            return;
        };
        let answer = waiting.poll();
        if answer == Answer::Pending {
            ctx.request_repaint_after(std::time::Duration::from_millis(50));
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        match (answer, waiting.request.purpose) {
            (Answer::Chosen(path), Purpose::Open) => self.guard_unsaved(Pending::Open(path)),
            (Answer::Chosen(path), Purpose::SaveAs) => {
                self.save_then(&chooser::with_ron_extension(&path), waiting.then);
            }
            (Answer::Unavailable, _) => {
                self.options.chooser = Chooser::Builtin;
                self.toasts.info(
                    "No native file dialog on this desktop (no XDG portal, no zenity): \
                     using the built-in one.",
                );
                self.builtin_dialog(&waiting.request, waiting.then);
            }
            (Answer::Cancelled | Answer::Pending, _) => {}
        }
    }

    /// Saves to the document's file, or asks for one first; then does `then`.
    pub(super) fn save_or_ask(&mut self, then: Option<Pending>) {
        match self.doc.path.clone() {
            Some(p) => self.save_then(&p, then),
            None => self.ask_save_as(then),
        }
    }

    /// Saves to `path`, then does what was waiting on the save. Overwriting a file whose
    /// workflow has comments in it asks first (the save writes the document anew).
    fn save_then(&mut self, path: &Path, then: Option<Pending>) {
        if self.doc.body_comments && self.doc.path.as_deref() == Some(path) {
            self.dialog = Some(Dialog::DropComments {
                path: path.to_path_buf(),
                then,
            });
            return;
        }
        if self.save_to(path).is_ok() {
            if let Some(then) = then {
                self.do_pending(then);
            }
        }
    }

    /// Runs `f` now if there is nothing unsaved, else asks first.
    pub(super) fn guard_unsaved(&mut self, then: Pending) {
        if self.doc.is_dirty() {
            self.dialog = Some(Dialog::Unsaved(then));
        } else {
            self.do_pending(then);
        }
    }

    fn do_pending(&mut self, then: Pending) {
        match then {
            Pending::New => self.new_document(),
            Pending::Open(p) => {
                let _ = self.open_path(&p);
            }
            Pending::Quit => {
                self.allow_close = true;
                files::clear_autosave(&self.options.config_dir);
            }
        }
    }

    /// While a native dialog is open the editor waits for it (and says so), with a way out to
    /// the in-app dialog should the native one be lost behind other windows.
    fn waiting_overlay(&mut self, ctx: &egui::Context) {
        let Some(waiting) = &self.waiting else {
            return;
        };
        let request = waiting.request.clone();
        let mut switch = false;
        egui::Modal::new(egui::Id::new("waiting-for-chooser")).show(ctx, |ui| {
            ui.heading(match request.purpose {
                Purpose::Open => "Choosing a workflow to open…",
                Purpose::SaveAs => "Choosing where to save…",
            });
            ui.label("The file dialog is open in its own window.");
            switch = ui.button("Type a path instead").clicked();
        });
        if switch {
            if let Some(w) = self.waiting.take() {
                self.builtin_dialog(&w.request, w.then);
            }
        }
    }

    pub(super) fn dialogs(&mut self, ctx: &egui::Context) {
        self.waiting_overlay(ctx);
        let Some(dialog) = self.dialog.clone() else {
            return;
        };
        let before = dialog.clone();
        let mut close = false;
        let mut next: Option<Dialog> = None;
        let modal = egui::Modal::new(egui::Id::new("dialog")).show(ctx, |ui| {
            ui.set_max_width(520.0);
            match dialog {
                Dialog::Open { mut path } => {
                    ui.heading("Open workflow");
                    ui.label("A .ron workflow, or a PNG written by Save Image:");
                    let edit = ui.add(
                        egui::TextEdit::singleline(&mut path)
                            .hint_text("path/to/workflow.ron")
                            .desired_width(480.0),
                    );
                    let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    ui.label("Examples:");
                    for p in files::examples() {
                        if ui.link(p.display().to_string()).clicked() {
                            path = p.display().to_string();
                        }
                    }
                    ui.horizontal(|ui| {
                        if ui.button("Open").clicked() || enter {
                            let p = PathBuf::from(path.trim());
                            close = true;
                            self.guard_unsaved(Pending::Open(p));
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                    if !close {
                        next = Some(Dialog::Open { path });
                    }
                }
                Dialog::SaveAs { mut path, then } => {
                    ui.heading("Save workflow as");
                    let edit = ui.add(egui::TextEdit::singleline(&mut path).desired_width(480.0));
                    let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                    ui.horizontal(|ui| {
                        if ui.button("Save").clicked() || enter {
                            close = true;
                            let p = chooser::with_ron_extension(Path::new(path.trim()));
                            self.save_then(&p, then.clone());
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                    if !close {
                        next = Some(Dialog::SaveAs { path, then });
                    }
                }
                Dialog::Unsaved(then) => {
                    ui.heading("Unsaved changes");
                    ui.label(format!(
                        "{} has changes that are not saved.",
                        self.doc.display_name()
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Save").clicked() {
                            close = true;
                            self.save_or_ask(Some(then.clone()));
                        }
                        if ui.button("Discard").clicked() {
                            close = true;
                            self.do_pending(then.clone());
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                    if !close {
                        next = Some(Dialog::Unsaved(then));
                    }
                }
                Dialog::Recover(wf) => {
                    ui.heading("Recover unsaved work?");
                    ui.label(format!(
                        "The last session ended with unsaved changes ({} nodes).",
                        wf.nodes.len()
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Recover").clicked() {
                            close = true;
                            self.doc = EditorDoc::new((*wf).clone(), None);
                            self.doc.mark_unsaved();
                            self.after_document_change();
                        }
                        if ui.button("Discard").clicked() {
                            close = true;
                            files::clear_autosave(&self.options.config_dir);
                        }
                    });
                    if !close {
                        next = Some(Dialog::Recover(wf));
                    }
                }
                Dialog::DropComments { path, then } => {
                    ui.heading("Drop the comments?");
                    ui.label(format!(
                        "{} has comments inside its workflow. Saving writes the workflow \
                         anew: the comments at the top are kept, the others are lost.",
                        path.display()
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Save without them").clicked() {
                            close = true;
                            self.doc.body_comments = false;
                            self.save_then(&path, then.clone());
                        }
                        if ui.button("Save as a new file…").clicked() {
                            close = true;
                            self.ask_save_as(then.clone());
                        }
                        if ui.button("Cancel").clicked() {
                            close = true;
                        }
                    });
                    if !close {
                        next = Some(Dialog::DropComments { path, then });
                    }
                }
                Dialog::OpenError(message) => {
                    ui.heading("Could not open the workflow");
                    ui.colored_label(self.theme.colors.error.color(), &message);
                    ui.label("The current workflow is unchanged.");
                    if ui.button("OK").clicked() {
                        close = true;
                    }
                    if !close {
                        next = Some(Dialog::OpenError(message));
                    }
                }
            }
        });
        if modal.should_close() {
            close = true;
        }
        if self.dialog.as_ref() != Some(&before) {
            return; // a handler opened another dialog (e.g. Save as…, an open error)
        }
        self.dialog = if close { None } else { next };
    }
}
