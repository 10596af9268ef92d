//! Notifications: short-lived toasts in the corner, plus a log the status bar and tests read.

use super::runner::Notice;
use super::theme::Theme;

/// How long a toast stays, in seconds.
const INFO_SECS: f64 = 4.0;
const ERROR_SECS: f64 = 10.0;

#[derive(Default)]
pub struct Toasts {
    shown: Vec<(Notice, Option<f64>)>,
    /// Every notice so far, oldest first.
    pub log: Vec<Notice>,
}

impl Toasts {
    pub fn push(&mut self, notice: Notice) {
        self.log.push(notice.clone());
        self.shown.push((notice, None));
        if self.shown.len() > 6 {
            self.shown.remove(0);
        }
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.push(Notice {
            error: false,
            text: text.into(),
        });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.push(Notice {
            error: true,
            text: text.into(),
        });
    }

    /// The latest notice, if any.
    pub fn last(&self) -> Option<&Notice> {
        self.log.last()
    }

    pub fn show(&mut self, ctx: &egui::Context, theme: &Theme) {
        let now = ctx.input(|i| i.time);
        self.shown.retain_mut(|(n, until)| {
            let end = *until.get_or_insert(now + if n.error { ERROR_SECS } else { INFO_SECS });
            end > now
        });
        if self.shown.is_empty() {
            return;
        }
        ctx.request_repaint_after(std::time::Duration::from_millis(500));
        let mut dismiss = None;
        egui::Area::new(egui::Id::new("toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, [-12.0, -36.0])
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                for (i, (n, _)) in self.shown.iter().enumerate() {
                    let color = if n.error {
                        theme.colors.error.color()
                    } else {
                        theme.colors.accent.color()
                    };
                    egui::Frame::popup(ui.style())
                        .stroke(egui::Stroke::new(1.5, color))
                        .show(ui, |ui| {
                            ui.set_max_width(420.0);
                            ui.horizontal(|ui| {
                                ui.colored_label(color, if n.error { "error" } else { "info" });
                                ui.label(&n.text);
                                if ui.small_button("✕").clicked() {
                                    dismiss = Some(i);
                                }
                            });
                        });
                }
            });
        if let Some(i) = dismiss {
            self.shown.remove(i);
        }
    }
}
