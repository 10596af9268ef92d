//! How long the editor takes to build a frame while a run goes on beside it (headless egui,
//! no painting): the executor works on its own thread, so frames stay short.
//!
//! `cargo run -p cachedit --example editor_frames -- [WORKFLOW] [STEPS]` (default:
//! `workflows/cache_adaptive.ron`, which has a live Detailed Stats node, at 50 steps)

use cachedit::gui::chooser::Chooser;
use cachedit::gui::{EditorApp, EditorOptions};
use cachedit_nodes::graph::document::Value;
use egui_kittest::Harness;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let workflow = std::env::args()
        .nth(1)
        .map_or_else(|| repo.join("workflows/cache_adaptive.ron"), PathBuf::from);
    let steps: i64 = match std::env::args().nth(2) {
        Some(s) => s.parse()?,
        None => 50,
    };
    let dir = tempfile::tempdir()?;
    let options = EditorOptions {
        config_dir: dir.path().join("config"),
        output_dir: dir.path().join("out"),
        hide_times: false,
        chooser: Chooser::Builtin,
    };
    let mut app = EditorApp::new(options);
    app.open_path(&workflow).map_err(anyhow::Error::msg)?;
    let sampler = app
        .doc
        .workflow()
        .nodes
        .iter()
        .find(|n| n.kind == "Sampler")
        .map(|n| n.id)
        .ok_or_else(|| anyhow::anyhow!("{} has no Sampler", workflow.display()))?;
    app.doc.set_param(sampler, "steps", Value::Int(steps));
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_ui_state(
            |ui, app: &mut EditorApp| {
                app.logic(ui.ctx());
                app.ui(ui);
            },
            app,
        );
    for _ in 0..10 {
        h.step(); // settle: fit the view, lay out the nodes
    }
    let start = Instant::now();
    h.state_mut().run();
    let mut frames = Vec::new();
    while h.state().runner.running {
        let t = Instant::now();
        h.step();
        frames.push(t.elapsed());
        // About 60 frames a second, as a window would ask for.
        std::thread::sleep(Duration::from_millis(16).saturating_sub(t.elapsed()));
    }
    let run = start.elapsed();
    frames.sort();
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let done = h
        .state()
        .runner
        .live
        .get(&sampler)
        .map_or(0, |l| l.steps.len());
    println!(
        "{}, {steps} steps ({done} step events seen): run {:.2} s, {} frames while it ran",
        workflow.file_name().map_or_else(
            || workflow.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        run.as_secs_f64(),
        frames.len()
    );
    if !frames.is_empty() {
        println!(
            "frame build time: median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            ms(pct(0.5)),
            ms(pct(0.95)),
            ms(pct(1.0))
        );
    }
    Ok(())
}
