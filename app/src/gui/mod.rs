//! The desktop node editor (eframe + egui-snarl): `cachedit` with no arguments opens it.

pub mod app;
pub mod body;
pub mod canvas;
pub mod chooser;
pub mod compare_view;
pub mod doc;
pub mod files;
pub mod fonts;
pub mod history;
pub mod notify;
pub mod palette;
pub mod params;
pub mod runner;
pub mod stats_view;
pub mod theme;

pub use app::{EditorApp, EditorOptions};

/// Opens the editor window, optionally with a workflow file (and runs it at once with
/// `run`), until the window is closed.
pub fn run_editor(open: Option<std::path::PathBuf>, run: bool) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("CacheDiT Studio")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "CacheDiT Studio",
        options,
        Box::new(move |_cc| {
            let mut app = EditorApp::new(EditorOptions::default());
            if let Some(path) = open {
                if app.open_path(&path).is_ok() && run {
                    app.run();
                }
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the editor window: {e}"))
}
