//! The editor driven headlessly with egui_kittest: build, wire and run the default graph, watch
//! the stats fill in, cancel, undo/redo, save/reopen, malformed files; snapshots of every node
//! kind's body and of the Detailed Stats view.

use cachedit::gui::app::{Dialog, Pending};
use cachedit::gui::body::{node_body, BodyContext};
use cachedit::gui::chooser::{Chooser, Purpose, Request};
use cachedit::gui::doc::Clip;
use cachedit::gui::runner::{NodeStatus, Runner};
use cachedit::gui::theme::Theme;
use cachedit::gui::{EditorApp, EditorOptions};
use cachedit_nodes::cache::{CacheSummary, CallRecord, CfgBranch, Decision, Reason};
use cachedit_nodes::exec::events::RunOutcome;
use cachedit_nodes::graph::document::{NodeId, PortRef, Value, Workflow};
use cachedit_nodes::graph::ron_io::load_workflow;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::sampling::stats::{SamplerStats, StepStat};
use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Env {
    _dir: tempfile::TempDir,
    options: EditorOptions,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EditorOptions {
        config_dir: dir.path().join("config"),
        output_dir: dir.path().join("out"),
        hide_times: true,
        chooser: Chooser::Builtin,
    };
    Env { _dir: dir, options }
}

/// An editor on `wf` (untitled), with the test's settings and output folders.
fn app_with(e: &Env, wf: Workflow) -> EditorApp {
    let mut app = EditorApp::new(e.options.clone());
    app.doc = cachedit::gui::doc::EditorDoc::new(wf, None);
    app
}

fn harness(app: EditorApp) -> Harness<'static, EditorApp> {
    Harness::builder()
        .with_size([1400.0, 900.0])
        // Fitting the view to the nodes takes a few frames.
        .with_max_steps(12)
        .build_ui_state(
            |ui, app: &mut EditorApp| {
                app.logic(ui.ctx());
                app.ui(ui);
            },
            app,
        )
}

/// A harness whose view shows every node (the canvas geometry tests aim the mouse at them).
fn fitted(app: EditorApp) -> Harness<'static, EditorApp> {
    let mut h = harness(app);
    h.state_mut().canvas.request_fit();
    h.run();
    h
}

/// Steps the UI until the run is over (the executor works on its own thread meanwhile).
fn step_until_idle(h: &mut Harness<'_, EditorApp>, limit: Duration) {
    let start = Instant::now();
    loop {
        h.step();
        if !h.state().runner.running {
            break;
        }
        assert!(start.elapsed() < limit, "run did not finish in {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

/// A primary-button press at `from`, a move to `to` over several frames, and a release.
fn mouse_drag(h: &mut Harness<'_, EditorApp>, from: egui::Pos2, to: egui::Pos2) {
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    // A few pixels first: the drag starts on the pin before the pointer leaves it.
    h.hover_at(from + egui::vec2(2.0, 0.0));
    h.step();
    for i in 1..=10 {
        h.hover_at(from + (to - from) * (i as f32 / 10.0));
        h.step();
    }
    h.event(egui::Event::PointerButton {
        pos: to,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    h.step();
    // A menu with a focused search field keeps repainting (the cursor blinks).
    let _ = h.run_ok();
}

/// A click of `button` at `at`, holding `modifiers`.
fn mouse_click(
    h: &mut Harness<'_, EditorApp>,
    at: egui::Pos2,
    button: egui::PointerButton,
    modifiers: Modifiers,
) {
    h.hover_at(at);
    h.step();
    for pressed in [true, false] {
        h.event_modifiers(
            egui::Event::PointerButton {
                pos: at,
                button,
                pressed,
                modifiers,
            },
            modifiers,
        );
        h.step();
    }
    h.run();
}

/// Where a port's pin is on screen.
fn pin(h: &Harness<'_, EditorApp>, node: NodeId, port: &str, input: bool) -> egui::Pos2 {
    h.state()
        .canvas
        .pin_pos(&PortRef::new(node, port), input)
        .unwrap_or_else(|| panic!("pin {node}.{port} is not drawn"))
}

/// A point on a node's title bar, on screen.
fn title_of(h: &Harness<'_, EditorApp>, node: NodeId) -> egui::Pos2 {
    let r = h
        .state()
        .canvas
        .node_rect(node)
        .unwrap_or_else(|| panic!("node {node} is not drawn"));
    r.left_top() + egui::vec2(60.0, 10.0)
}

/// A spot of empty canvas, well clear of every node, on screen.
fn empty_canvas(h: &Harness<'_, EditorApp>) -> egui::Pos2 {
    let app = h.state();
    let rects: Vec<egui::Rect> = app
        .doc
        .workflow()
        .nodes
        .iter()
        .filter_map(|n| app.canvas.node_rect(n.id))
        .collect();
    (0..40)
        .flat_map(|row| (0..60).map(move |col| egui::pos2(col as f32 * 25.0, row as f32 * 25.0)))
        .find(|p| {
            app.canvas.shows(*p)
                && app.canvas.shows(*p + egui::vec2(260.0, 160.0))
                && rects
                    .iter()
                    .all(|r| r.expand(40.0).distance_to_pos(*p) > 0.0)
        })
        .expect("some empty canvas")
}

fn has_link(wf: &Workflow, from: &PortRef, to: &PortRef) -> bool {
    wf.links.iter().any(|l| &l.from == from && &l.to == to)
}

/// The window was asked to close (a viewport command of the last frame).
fn close_sent(h: &Harness<'_, EditorApp>, command: &egui::ViewportCommand) -> bool {
    h.output()
        .viewport_output
        .get(&egui::ViewportId::ROOT)
        .is_some_and(|v| v.commands.contains(command))
}

/// The window manager's close button.
fn request_close(h: &mut Harness<'_, EditorApp>) {
    h.input_mut()
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .events
        .push(egui::ViewportEvent::Close);
    h.step();
}

/// Steps until `done` holds (a native dialog answers on its own thread).
fn step_until(
    h: &mut Harness<'_, EditorApp>,
    what: &str,
    done: impl Fn(&Harness<'_, EditorApp>) -> bool,
) {
    let start = Instant::now();
    while !done(h) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: timed out; last notice {:?}",
            h.state().toasts.last()
        );
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The model the default workflow loads (whatever it is named today).
fn default_model() -> Value {
    let wf = load_workflow(&repo().join("workflows/default.ron")).expect("default.ron");
    wf.nodes
        .iter()
        .find(|n| n.kind == "LoadModel")
        .and_then(|n| n.params.get("model").cloned())
        .expect("default.ron has a Load Model with a model")
}

fn node_of(wf: &Workflow, kind: &str) -> NodeId {
    wf.nodes
        .iter()
        .find(|n| n.kind == kind)
        .map(|n| n.id)
        .unwrap_or_else(|| panic!("no {kind} node"))
}

#[test]
fn build_the_default_graph_from_the_palette_run_it_and_see_the_stats() {
    let e = env();
    let mut h = harness(EditorApp::new(e.options.clone()));
    h.run();
    for title in [
        "Load Model",
        "Sampler",
        "Save Image",
        "CacheDit Advanced Config",
        "Detailed Stats",
    ] {
        h.get_by_label(title).click();
        h.run();
    }
    let wf = h.state().doc.workflow().clone();
    assert_eq!(wf.nodes.len(), 5, "{wf:?}");
    let (load, sampler, save, config, stats) = (
        node_of(&wf, "LoadModel"),
        node_of(&wf, "Sampler"),
        node_of(&wf, "SaveImage"),
        node_of(&wf, "CacheDitAdvancedConfig"),
        node_of(&wf, "DetailedStats"),
    );
    {
        let app = h.state_mut();
        app.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"))
            .expect("model link");
        app.connect(PortRef::new(sampler, "image"), PortRef::new(save, "image"))
            .expect("image link");
        app.connect(
            PortRef::new(config, "cache"),
            PortRef::new(sampler, "cache"),
        )
        .expect("cache link");
        app.connect(PortRef::new(sampler, "stats"), PortRef::new(stats, "stats"))
            .expect("stats link");
        // A wrong type is refused with a reason, and the user is told.
        let err = app
            .connect(PortRef::new(load, "model"), PortRef::new(save, "image"))
            .expect_err("MODEL into IMAGE");
        assert!(err.contains("MODEL") && err.contains("IMAGE"), "{err}");
        assert!(app.toasts.last().is_some_and(|n| n.error));
        app.doc.set_param(load, "model", default_model());
        app.doc.set_param(sampler, "steps", Value::Int(6));
        app.doc.set_param(config, "warmup", Value::Int(1));
    }
    h.run();
    // Before the run, the config's counter schedule is drawn.
    h.get_by_label("schedule preview");
    h.key_press_modifiers(Modifiers::COMMAND, Key::Enter);
    h.step();
    assert!(h.state().runner.running || h.state().runner.outcome.is_some());
    step_until_idle(&mut h, Duration::from_secs(300));
    let app = h.state();
    assert_eq!(
        app.runner.outcome.map(|o| o.0),
        Some(RunOutcome::Completed),
        "{:?}",
        app.toasts.log
    );
    let wf = app.doc.workflow();
    let s = app
        .runner
        .stats_for(wf, stats)
        .expect("stats for the Detailed Stats node");
    assert_eq!(s.steps.len(), 6);
    assert!(matches!(
        app.runner.status.get(&save),
        Some(NodeStatus::Done { .. })
    ));
    assert!(
        app.runner.previews.contains_key(&sampler),
        "the Sampler got live previews"
    );
    h.get_by_label_contains("hit rate");
    h.get_by_label_contains("block evals saved");
    // The config node now shows the threshold against the run's diff percentiles; the
    // untrained model's diffs are far above the default threshold.
    let wf = h.state().doc.workflow().clone();
    if let Some(d) = s.summary.as_ref().and_then(|s| s.diffs.clone()) {
        let t = wf
            .node(config)
            .and_then(|n| {
                n.params
                    .get("residual_diff_threshold")
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(
                cachedit_nodes::cache::StepCacheConfig::studio_default()
                    .db
                    .residual_diff_threshold,
            );
        if t <= d.min {
            h.get_by_label_contains("nothing will be reused");
        }
    }

    // Changing only a cache setting re-runs the sampler but reuses the loaded model.
    h.state_mut()
        .doc
        .set_param(config, "skip_interval", Value::Int(3));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(300));
    assert!(matches!(
        h.state().runner.status.get(&load),
        Some(NodeStatus::Done { reused: true, .. })
    ));
    h.get_by_label("reused: model already loaded");
}

#[test]
fn escape_cancels_a_running_sampler_between_steps() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/default.ron"))
        .expect("default workflow");
    let sampler = node_of(app.doc.workflow(), "Sampler");
    let load = node_of(app.doc.workflow(), "LoadModel");
    app.doc.set_param(sampler, "steps", Value::Int(1000));
    app.doc.set_param(load, "device", Value::Text("cpu".into()));
    let mut h = harness(app);
    h.run();
    h.state_mut().run();
    let start = Instant::now();
    while h
        .state()
        .runner
        .live
        .get(&sampler)
        .is_none_or(|l| l.steps.is_empty())
    {
        h.step();
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no step arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    h.key_press(Key::Escape);
    step_until_idle(&mut h, Duration::from_secs(60));
    let app = h.state();
    assert_eq!(app.runner.outcome.map(|o| o.0), Some(RunOutcome::Cancelled));
    let done = app.runner.live.get(&sampler).map_or(0, |l| l.steps.len());
    assert!(done < 1000, "stopped early, after {done} steps");
    assert_eq!(
        app.runner.status.get(&sampler),
        Some(&NodeStatus::Cancelled)
    );
    h.get_by_label("cancelled");
}

#[test]
fn undo_and_redo_an_edit_with_the_keyboard() {
    let e = env();
    let mut h = harness(EditorApp::new(e.options.clone()));
    h.run();
    h.get_by_label("Sampler").click();
    h.run();
    let sampler = node_of(h.state().doc.workflow(), "Sampler");
    // Several changes in one drag are one undo step.
    for s in [10, 11, 12] {
        h.state_mut().doc.set_param(sampler, "steps", Value::Int(s));
    }
    h.state_mut().doc.end_merge();
    h.run();
    let steps = |h: &Harness<'_, EditorApp>| {
        h.state()
            .doc
            .workflow()
            .node(sampler)
            .and_then(|n| n.params.get("steps").cloned())
    };
    assert_eq!(steps(&h), Some(Value::Int(12)));
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(steps(&h), None);
    h.key_press_modifiers(Modifiers::COMMAND, Key::Y);
    h.run();
    assert_eq!(steps(&h), Some(Value::Int(12)));
    // Undo twice removes the node again.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert!(h.state().doc.workflow().nodes.is_empty());
}

#[test]
fn save_and_reopen_gives_the_same_document() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/cache_adaptive.ron"))
        .expect("example");
    let sampler = node_of(app.doc.workflow(), "Sampler");
    app.doc.set_param(sampler, "seed", Value::Int(7));
    assert!(app.doc.is_dirty());
    let original = app.doc.workflow().clone();
    std::fs::create_dir_all(&e.options.config_dir).expect("dir");
    let path = e.options.config_dir.join("saved.ron");
    app.save_to(&path).expect("save");
    assert!(!app.doc.is_dirty());
    app.new_document();
    assert!(app.doc.workflow().nodes.is_empty());
    app.open_path(&path).expect("reopen");
    assert_eq!(app.doc.workflow(), &original);
    assert_eq!(
        app.settings
            .recent
            .first()
            .map(|p| p.ends_with("saved.ron")),
        Some(true)
    );
    // Recent files and the theme persist in the settings folder.
    app.set_theme("light");
    let again = EditorApp::new(e.options.clone());
    assert_eq!(again.settings.theme, "light");
    assert!(!again.settings.recent.is_empty());
}

#[test]
fn a_malformed_workflow_names_line_and_column_and_the_editor_stays_usable() {
    let e = env();
    std::fs::create_dir_all(&e.options.config_dir).expect("dir");
    let bad = e.options.config_dir.join("broken.ron");
    std::fs::write(
        &bad,
        "(\n    version: 1,\n    nodes: [\n        (id: 1, kind: \"Sampler\" pos: (0.0, 0.0)),\n    ],\n)\n",
    )
    .expect("write");
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/default.ron"))
        .expect("default");
    let before = app.doc.workflow().clone();
    let err = app.open_path(&bad).expect_err("malformed");
    assert!(err.contains("broken.ron:4:"), "{err}");
    let mut h = harness(app);
    h.run();
    // Shown in the dialog (and in the notification).
    assert!(h.get_all_by_label_contains("broken.ron:4:").count() >= 1);
    h.get_by_label("OK").click();
    h.run();
    assert!(h.state().dialog.is_none());
    assert_eq!(
        h.state().doc.workflow(),
        &before,
        "the open document is untouched"
    );
    h.get_by_label("Detailed Stats").click();
    h.run();
    assert_eq!(h.state().doc.workflow().nodes.len(), before.nodes.len() + 1);
}

#[test]
fn unsaved_changes_are_asked_about_and_autosave_is_offered_back() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.add_from_palette("Sampler");
    assert!(app.doc.is_dirty());
    cachedit::gui::files::write_autosave(&e.options.config_dir, app.doc.workflow())
        .expect("autosave");
    let mut h = harness(app);
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::N);
    h.run();
    assert!(matches!(h.state().dialog, Some(Dialog::Unsaved(_))));
    h.get_by_label("Discard").click();
    h.run();
    assert!(h.state().doc.workflow().nodes.is_empty());
    // A new session finds the autosave and offers it back.
    let mut h2 = harness(EditorApp::new(e.options.clone()));
    h2.run();
    h2.get_by_label("Recover").click();
    h2.run();
    assert_eq!(h2.state().doc.workflow().nodes.len(), 1);
}

#[test]
fn a_png_written_by_the_app_restores_its_workflow() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/default.ron"))
        .expect("default");
    let sampler = node_of(app.doc.workflow(), "Sampler");
    app.doc.set_param(sampler, "steps", Value::Int(2));
    let ran = app.doc.workflow().clone();
    let mut h = harness(app);
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(300));
    let png = h
        .state()
        .runner
        .files
        .values()
        .next()
        .cloned()
        .expect("Save Image wrote a PNG");
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&png).expect("restore from PNG");
    assert_eq!(app.doc.workflow().nodes, ran.nodes);
    assert_eq!(app.doc.workflow().links, ran.links);
    assert!(
        app.doc.path.is_none(),
        "a restored workflow is saved under a new name"
    );
}

#[test]
fn dragging_a_kind_from_the_palette_drops_it_on_the_canvas() {
    let e = env();
    let mut h = harness(EditorApp::new(e.options.clone()));
    h.run();
    let from = h.get_by_label("Detailed Stats").rect().center();
    let to = egui::pos2(900.0, 300.0);
    mouse_drag(&mut h, from, to);
    let wf = h.state().doc.workflow();
    assert_eq!(wf.nodes.len(), 1, "{wf:?}");
    assert_eq!(wf.nodes[0].kind, "DetailedStats");
}

#[test]
fn the_theme_switches_and_the_choice_persists() {
    let e = env();
    let mut h = harness(EditorApp::new(e.options.clone()));
    h.run();
    assert!(h.ctx.global_style().visuals.dark_mode);
    h.state_mut().set_theme("light");
    h.run();
    let light = Theme::builtin("light").expect("light theme");
    assert!(!h.ctx.global_style().visuals.dark_mode);
    assert_eq!(
        h.ctx.global_style().visuals.panel_fill,
        light.colors.panel.color()
    );
    assert_eq!(EditorApp::new(e.options.clone()).theme.name, "light");
}

#[test]
fn a_failing_node_shows_its_error_and_the_user_is_notified() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/default.ron"))
        .expect("default");
    let load = node_of(app.doc.workflow(), "LoadModel");
    app.doc
        .set_param(load, "model", Value::Text("no-such-model".into()));
    let mut h = harness(app);
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(120));
    let app = h.state();
    assert_eq!(app.runner.outcome.map(|o| o.0), Some(RunOutcome::Failed));
    let Some(NodeStatus::Failed(message)) = app.runner.status.get(&load).cloned() else {
        panic!("Load Model is not marked failed: {:?}", app.runner.status);
    };
    assert!(message.contains("no-such-model"), "{message}");
    assert!(
        app.toasts
            .log
            .iter()
            .any(|n| n.error && n.text.contains("no-such-model")),
        "{:?}",
        app.toasts.log
    );
    // On the node (and in the notification).
    assert!(h.get_all_by_label_contains("no-such-model").count() >= 2);
    h.get_by_label("1 node(s) failed");
}

#[test]
fn double_click_on_the_canvas_opens_a_searchable_quick_add() {
    let e = env();
    // kittest feeds one pointer event per step: short steps keep the two clicks a double.
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .with_step_dt(0.02)
        .build_ui_state(
            |ui, app: &mut EditorApp| {
                app.logic(ui.ctx());
                app.ui(ui);
            },
            EditorApp::new(e.options.clone()),
        );
    h.run();
    let at = egui::pos2(800.0, 250.0);
    h.hover_at(at);
    h.step();
    for _ in 0..2 {
        for pressed in [true, false] {
            h.event(egui::Event::PointerButton {
                pos: at,
                button: egui::PointerButton::Primary,
                pressed,
                modifiers: Modifiers::NONE,
            });
        }
    }
    h.step();
    h.run();
    h.get_by_label("Add node");
    // The popup's search field has the keyboard focus.
    h.event(egui::Event::Text("stats".into()));
    h.run();
    h.key_press(Key::Enter);
    h.run();
    let wf = h.state().doc.workflow();
    assert_eq!(wf.nodes.len(), 1, "{wf:?}");
    assert_eq!(wf.nodes[0].kind, "DetailedStats");
}

// ----- snapshots -----

/// A harness that draws the body of `cases[state]` on its own, in the dark theme.
fn body_harness<'a>(
    cases: &'a [(String, Workflow, NodeId)],
    runner: &'a Runner,
    theme: &'a Theme,
    registry: &'a Registry,
    images: &'a HashMap<NodeId, egui::TextureHandle>,
    size: [f32; 2],
) -> Harness<'a, usize> {
    let h = Harness::builder().with_size(size).build_ui_state(
        move |ui, case: &mut usize| {
            let Some((_, wf, id)) = cases.get(*case) else {
                return;
            };
            let bcx = BodyContext {
                wf,
                registry,
                theme,
                runner,
                images,
                hide_times: true,
            };
            egui::Frame::new()
                .fill(theme.colors.node.color())
                .inner_margin(8.0)
                .show(ui, |ui| {
                    node_body(ui, &bcx, *id);
                });
        },
        0usize,
    );
    theme.apply(&h.ctx);
    h
}

/// Snapshots node bodies, one image per case, all from one harness (so that kittest can
/// report every mismatch of the test at once).
fn snapshot_bodies(cases: &[(String, Workflow, NodeId)], runner: &Runner, size: [f32; 2]) {
    let theme = Theme::builtin("dark").expect("theme");
    let registry = Registry::builtin();
    let images = HashMap::new();
    let mut h = body_harness(cases, runner, &theme, &registry, &images, size);
    for (i, (name, _, _)) in cases.iter().enumerate() {
        *h.state_mut() = i;
        h.run();
        h.snapshot(name);
    }
}

#[test]
fn every_node_kind_body_matches_its_snapshot() {
    let registry = Registry::builtin();
    let runner = Runner::new(std::env::temp_dir());
    let cases: Vec<(String, Workflow, NodeId)> = registry
        .specs()
        .map(|spec| {
            let mut wf = Workflow::default();
            let id = wf.add_node(spec.name, [0.0, 0.0]);
            (format!("body_{}", spec.name), wf, id)
        })
        .collect();
    assert!(cases.len() >= 5, "every registered kind is covered");
    snapshot_bodies(&cases, &runner, [440.0, 420.0]);
}

fn fake_stats(steps: usize) -> SamplerStats {
    let calls: Vec<CallRecord> = (0..steps)
        .flat_map(|step| {
            [CfgBranch::Cond, CfgBranch::Uncond].map(|branch| {
                let reused = step >= 2 && step + 1 < steps && step % 3 != 0;
                let diff =
                    (step >= 1).then(|| 0.02 + 0.01 * ((step * 7 + branch as usize) % 5) as f64);
                CallRecord {
                    step,
                    branch,
                    decision: if reused {
                        Decision::Reused
                    } else {
                        Decision::Computed
                    },
                    reason: match (step, reused) {
                        (0 | 1, _) => Reason::Warmup,
                        (_, true) => Reason::DiffBelow,
                        (s, false) if s + 1 == steps => Reason::LastStep,
                        _ => Reason::DiffAbove,
                    },
                    diff,
                    threshold: (step >= 2).then_some(0.045),
                    blocks_run: if reused { 2 } else { 8 },
                    blocks_total: 8,
                    ms: 1.0,
                    work: None,
                    attention_reused: 0,
                    pattern: None,
                }
            })
        })
        .collect();
    let summary = CacheSummary::from_records("DBCache F1B1 W2", &calls, 4096);
    SamplerStats {
        model: "random-tiny".into(),
        transformer_calls: calls.len(),
        block_evaluations: summary.block_evaluations,
        steps: (0..steps)
            .map(|index| StepStat {
                index,
                timestep: 1.0 - index as f64 / steps as f64,
                ms: 2.0,
            })
            .collect(),
        calls,
        summary: Some(summary),
        ..SamplerStats::default()
    }
}

#[test]
fn detailed_stats_view_matches_its_snapshot() {
    let mut wf = Workflow::default();
    let sampler = wf.add_node("Sampler", [0.0, 0.0]);
    let stats = wf.add_node("DetailedStats", [300.0, 0.0]);
    let config = wf.add_node("CacheDitAdvancedConfig", [0.0, 300.0]);
    wf.connect(PortRef::new(sampler, "stats"), PortRef::new(stats, "stats"));
    wf.connect(
        PortRef::new(config, "cache"),
        PortRef::new(sampler, "cache"),
    );
    // Below every recorded diff: the config node warns that nothing will be reused.
    wf.set_param(config, "residual_diff_threshold", Value::Float(0.01));
    let mut runner = Runner::new(std::env::temp_dir());
    runner.stats.insert(sampler, Arc::new(fake_stats(16)));
    snapshot_bodies(
        &[
            ("detailed_stats_finished_run".to_string(), wf.clone(), stats),
            ("config_threshold_vs_last_run".to_string(), wf, config),
        ],
        &runner,
        [460.0, 420.0],
    );
}

#[test]
fn hovering_a_timeline_cell_shows_that_steps_numbers() {
    let mut wf = Workflow::default();
    let sampler = wf.add_node("Sampler", [0.0, 0.0]);
    let stats = wf.add_node("DetailedStats", [300.0, 0.0]);
    wf.connect(PortRef::new(sampler, "stats"), PortRef::new(stats, "stats"));
    let mut runner = Runner::new(std::env::temp_dir());
    runner.stats.insert(sampler, Arc::new(fake_stats(16)));
    let cases = [("stats".to_string(), wf, stats)];
    let theme = Theme::builtin("dark").expect("theme");
    let registry = Registry::builtin();
    let images = HashMap::new();
    let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 420.0]);
    h.run();
    // The strip starts at (16, 30) (margins, then an empty status row); cells are
    // `timeline_cell` wide, rows are the CFG branches (cond first).
    let [cw, ch] = theme.spacing.timeline_cell;
    let corner = egui::pos2(16.0, 30.0);
    let probe = corner + egui::vec2(cw * 5.5, ch * 0.5);
    h.hover_at(probe);
    h.run_steps(8);
    h.get_by_label_contains("step 5 (cond)");
    h.get_by_label_contains("residual diff");
}

#[test]
fn wiring_pins_with_the_mouse_connects_them_and_refuses_a_wrong_type() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let load = app.add_from_palette("LoadModel");
    let sampler = app.add_from_palette("Sampler");
    let save = app.add_from_palette("SaveImage");
    let mut h = fitted(app);
    let (from, to) = (PortRef::new(load, "model"), PortRef::new(sampler, "model"));
    let (a, b) = (
        pin(&h, load, "model", false),
        pin(&h, sampler, "model", true),
    );
    mouse_drag(&mut h, a, b);
    assert!(
        has_link(h.state().doc.workflow(), &from, &to),
        "{:?}",
        h.state().doc.workflow().links
    );
    // The wire is drawn on the canvas too.
    assert_eq!(h.state().canvas.snarl.wires().count(), 1);
    // MODEL into IMAGE: refused, with the reason in a notification.
    let (a, b) = (pin(&h, load, "model", false), pin(&h, save, "image", true));
    mouse_drag(&mut h, a, b);
    let wf = h.state().doc.workflow();
    assert!(wf.links.iter().all(|l| l.to.node != save), "{:?}", wf.links);
    let notice = h.state().toasts.last().expect("a notification");
    assert!(
        notice.error && notice.text.contains("MODEL") && notice.text.contains("IMAGE"),
        "{}",
        notice.text
    );
    assert_eq!(h.state().canvas.snarl.wires().count(), 1);
}

#[test]
fn a_wire_dropped_on_empty_canvas_offers_the_kinds_that_fit() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let sampler = app.add_from_palette("Sampler");
    let mut h = fitted(app);
    let to = empty_canvas(&h);
    let from = pin(&h, sampler, "image", false);
    mouse_drag(&mut h, from, to);
    h.get_by_label("Add a node that takes IMAGE");
    // Save Image takes an image, Load Model does not: only the palette lists Load Model.
    assert_eq!(h.get_all_by_label("Load Model").count(), 1);
    let offered: Vec<egui::Rect> = h.get_all_by_label("Save Image").map(|n| n.rect()).collect();
    assert_eq!(offered.len(), 2, "palette and menu");
    let in_menu = offered
        .iter()
        .copied()
        .max_by(|a, b| a.left().total_cmp(&b.left()))
        .expect("menu entry");
    mouse_click(
        &mut h,
        in_menu.center(),
        egui::PointerButton::Primary,
        Modifiers::NONE,
    );
    let wf = h.state().doc.workflow().clone();
    let save = node_of(&wf, "SaveImage");
    assert!(
        has_link(
            &wf,
            &PortRef::new(sampler, "image"),
            &PortRef::new(save, "image")
        ),
        "{:?}",
        wf.links
    );
    // The new node sits where the wire was dropped.
    let placed = h.state().canvas.node_rect(save).expect("drawn");
    assert!(placed.expand(4.0).contains(to), "{placed:?} vs {to:?}");
    // One undo takes back the node and its wire together.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    let wf = h.state().doc.workflow();
    assert!(wf.node(save).is_none() && wf.links.is_empty(), "{wf:?}");
    assert!(wf.node(sampler).is_some());
}

#[test]
fn the_node_context_menu_duplicates_and_deletes() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let sampler = app.add_from_palette("Sampler");
    app.doc.set_param(sampler, "steps", Value::Int(13));
    let mut h = fitted(app);
    let samplers = |h: &Harness<'_, EditorApp>| -> Vec<NodeId> {
        let wf = h.state().doc.workflow();
        wf.nodes
            .iter()
            .filter(|n| n.kind == "Sampler")
            .map(|n| n.id)
            .collect()
    };
    let at = title_of(&h, sampler);
    mouse_click(&mut h, at, egui::PointerButton::Secondary, Modifiers::NONE);
    h.get_by_label("Duplicate").click();
    h.run();
    let both = samplers(&h);
    assert_eq!(both.len(), 2, "{both:?}");
    let copy = both
        .into_iter()
        .find(|id| *id != sampler)
        .expect("the copy");
    let params = |id| h.state().doc.workflow().node(id).map(|n| n.params.clone());
    assert_eq!(params(copy), params(sampler), "the copy keeps the params");
    let at = title_of(&h, sampler);
    mouse_click(&mut h, at, egui::PointerButton::Secondary, Modifiers::NONE);
    h.get_by_label("Delete").click();
    h.run();
    assert_eq!(samplers(&h), vec![copy]);
    // One undo brings it back.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(samplers(&h).len(), 2);
}

#[test]
fn copy_and_paste_with_the_keyboard_and_between_windows() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let load = app.add_from_palette("LoadModel");
    let sampler = app.add_from_palette("Sampler");
    app.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"))
        .expect("link");
    let mut h = fitted(app);
    // Shift+click selects, a second Shift+click adds to the selection.
    let at = title_of(&h, load);
    mouse_click(&mut h, at, egui::PointerButton::Primary, Modifiers::SHIFT);
    let at = title_of(&h, sampler);
    mouse_click(&mut h, at, egui::PointerButton::Primary, Modifiers::SHIFT);
    let mut selected = h.state().canvas.selected(&h.ctx);
    selected.sort();
    assert_eq!(selected, vec![load, sampler]);
    // Copy: the desktop's Ctrl+C arrives as a Copy event; the nodes go to the system clipboard.
    h.event(egui::Event::Copy);
    h.step();
    let text = h
        .output()
        .platform_output
        .commands
        .iter()
        .find_map(|c| match c {
            egui::OutputCommand::CopyText(t) => Some(t.clone()),
            _ => None,
        })
        .expect("copied to the system clipboard");
    let clip = Clip::from_text(&text).expect("our clip");
    assert_eq!(clip.nodes.len(), 2);
    // Ctrl+V with the pointer over empty canvas pastes there, links included.
    let at = empty_canvas(&h);
    h.hover_at(at);
    h.step();
    h.key_press_modifiers(Modifiers::COMMAND, Key::V);
    h.run();
    let wf = h.state().doc.workflow().clone();
    assert_eq!(wf.nodes.len(), 4);
    assert_eq!(wf.links.len(), 2);
    let pasted_load = wf
        .nodes
        .iter()
        .filter(|n| n.kind == "LoadModel")
        .map(|n| n.id)
        .max()
        .expect("pasted");
    let placed = h.state().doc.workflow().node(pasted_load).map(|n| n.pos);
    let want = h.state().canvas.to_graph(at);
    assert_eq!(placed, Some([want.x, want.y]));
    // Another editor window gets the nodes through the clipboard text (a Paste event).
    let mut other = harness(EditorApp::new(e.options.clone()));
    other.run();
    other.event(egui::Event::Paste(text));
    other.step();
    other.run();
    let got = other.state().doc.workflow();
    assert_eq!(got.nodes.len(), 2);
    assert_eq!(got.links.len(), 1);
    // Text that is not ours pastes nothing.
    other.event(egui::Event::Paste("hello".into()));
    other.step();
    assert_eq!(other.state().doc.workflow().nodes.len(), 2);
}

#[test]
fn closing_with_unsaved_changes_asks_and_save_then_closes() {
    let e = env();
    std::fs::create_dir_all(&e.options.config_dir).expect("dir");
    let target = e.options.config_dir.join("kept");
    let asked: Arc<Mutex<Vec<Request>>> = Arc::default();
    let log = Arc::clone(&asked);
    let chosen = target.clone();
    let options = EditorOptions {
        chooser: Chooser::Native(Arc::new(move |r: &Request| {
            log.lock().expect("lock").push(r.clone());
            // A person takes longer than this to answer.
            std::thread::sleep(Duration::from_millis(400));
            Some(chosen.clone())
        })),
        ..e.options.clone()
    };
    let mut app = EditorApp::new(options);
    app.add_from_palette("Sampler");
    let mut h = harness(app);
    h.run();
    request_close(&mut h);
    assert!(
        close_sent(&h, &egui::ViewportCommand::CancelClose),
        "the close is held back"
    );
    h.run();
    assert_eq!(h.state().dialog, Some(Dialog::Unsaved(Pending::Quit)));
    // Cancel keeps the window and the work.
    h.get_by_label("Cancel").click();
    h.run();
    assert!(h.state().dialog.is_none());
    assert!(!close_sent(&h, &egui::ViewportCommand::Close));
    // Close again, Save: the document has no file yet, so the save dialog asks where, then the
    // window closes.
    request_close(&mut h);
    h.run();
    h.get_by_label("Save").click();
    h.step();
    h.step();
    h.get_by_label("Choosing where to save…");
    step_until(&mut h, "saved and closed", |h| {
        close_sent(h, &egui::ViewportCommand::Close)
    });
    let saved = target.with_extension("ron");
    let back = load_workflow(&saved).expect("saved before closing");
    assert_eq!(&back, h.state().doc.workflow());
    let asked = asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].purpose, Purpose::SaveAs);
    assert_eq!(asked[0].file_name.as_deref(), Some("my_workflow.ron"));
}

#[test]
fn open_uses_the_native_dialog_and_falls_back_when_none_comes_up() {
    let e = env();
    let example = repo().join("workflows/cache_adaptive.ron");
    let chosen = example.clone();
    let options = EditorOptions {
        chooser: Chooser::Native(Arc::new(move |r: &Request| {
            std::thread::sleep(Duration::from_millis(400));
            (r.purpose == Purpose::Open).then(|| chosen.clone())
        })),
        ..e.options.clone()
    };
    let mut h = harness(EditorApp::new(options));
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::O);
    h.step();
    h.get_by_label("Choosing a workflow to open…");
    // An example opens as an untitled copy of itself.
    step_until(&mut h, "opened", |h| {
        h.state().doc.example.as_deref() == Some("cache_adaptive.ron")
    });
    assert_eq!(
        h.state().doc.workflow(),
        &load_workflow(&example).expect("example")
    );
    // Cancel in the native dialog (a slow "no") leaves everything as it is.
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::S);
    h.step();
    h.get_by_label("Choosing where to save…");
    step_until(&mut h, "cancelled", |h| {
        h.query_all_by_label("Choosing where to save…").count() == 0
    });
    assert!(h.state().dialog.is_none());
    assert!(matches!(h.state().options.chooser, Chooser::Native(_)));

    // A desktop with no dialog to show answers "no" at once: the in-app dialog takes over.
    let options = EditorOptions {
        chooser: Chooser::Native(Arc::new(|_: &Request| None)),
        ..e.options.clone()
    };
    let mut h = harness(EditorApp::new(options));
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::O);
    step_until(&mut h, "fell back", |h| h.state().dialog.is_some());
    assert_eq!(
        h.state().dialog,
        Some(Dialog::Open {
            path: String::new()
        })
    );
    assert!(matches!(h.state().options.chooser, Chooser::Builtin));
    assert!(h
        .state()
        .toasts
        .last()
        .is_some_and(|n| n.text.contains("built-in")));
}

#[test]
fn moving_a_node_and_dragging_a_slider_are_one_undo_step_each() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let config = app.add_from_palette("CacheDitAdvancedConfig");
    let mut h = fitted(app);
    let pos = |h: &Harness<'_, EditorApp>| h.state().doc.workflow().node(config).map(|n| n.pos);
    let noise = |h: &Harness<'_, EditorApp>| {
        h.state()
            .doc
            .workflow()
            .node(config)
            .and_then(|n| n.params.get("noise_scale").cloned())
    };
    let start = pos(&h).expect("placed");
    let at = title_of(&h, config);
    mouse_drag(&mut h, at, at + egui::vec2(120.0, 80.0));
    let moved = pos(&h).expect("placed");
    assert!(
        moved[0] > start[0] + 50.0 && moved[1] > start[1] + 30.0,
        "{start:?} → {moved:?}"
    );
    // A slider dragged across many frames is one edit.
    assert_eq!(noise(&h), None);
    // Widgets inside nodes report graph coordinates; the canvas says where they are on screen.
    let slider = h.get_by_role(egui::accesskit::Role::Slider).rect();
    let canvas = &h.state().canvas;
    let (from, to) = (
        canvas.to_screen(slider.left_center() + egui::vec2(4.0, 0.0)),
        canvas.to_screen(slider.center()),
    );
    mouse_drag(&mut h, from, to);
    let dragged = noise(&h).expect("the slider set noise_scale");
    assert!(dragged.as_f64().is_some_and(|x| x > 0.0), "{dragged:?}");
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(noise(&h), None, "one undo takes back the whole drag");
    assert_eq!(pos(&h), Some(moved));
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(pos(&h), Some(start), "one undo takes back the whole move");
}

// ----- issue 11 §2: measured speedup, baseline progress, stale stats, live timeline -----

mod measured_speedup {
    use super::*;
    use cachedit::gui::runner::Notice;
    use cachedit::gui::stats_view::{self, StatsInput};
    use cachedit_nodes::exec::events::{Event, MeasurePhase, MeasureProgress, StepProgress};
    use cachedit_nodes::sampling::measure::{Measured, RunTime, Verdict};

    /// Sampler (`baseline` on, cache linked) → Detailed Stats.
    fn measuring_workflow() -> (Workflow, NodeId, NodeId) {
        let mut wf = Workflow::default();
        let sampler = wf.add_node("Sampler", [0.0, 0.0]);
        let stats = wf.add_node("DetailedStats", [300.0, 0.0]);
        let config = wf.add_node("CacheDitAdvancedConfig", [0.0, 300.0]);
        wf.connect(PortRef::new(sampler, "stats"), PortRef::new(stats, "stats"));
        wf.connect(
            PortRef::new(config, "cache"),
            PortRef::new(sampler, "cache"),
        );
        wf.set_param(sampler, "steps", Value::Int(16));
        wf.set_param(sampler, "baseline", Value::Bool(true));
        (wf, sampler, stats)
    }

    fn live_step(index: usize, total: usize) -> StepProgress {
        StepProgress {
            index,
            total,
            timestep: 0.0,
            ms: 1.0,
            calls: vec![CallRecord {
                step: index,
                branch: CfgBranch::Batched,
                decision: Decision::Computed,
                reason: Reason::Warmup,
                diff: None,
                threshold: None,
                blocks_run: 8,
                blocks_total: 8,
                ms: 1.0,
                work: None,
                attention_reused: 0,
                pattern: None,
            }],
            preview: None,
        }
    }

    fn apply(runner: &mut Runner, event: Event) {
        let mut notices: Vec<Notice> = Vec::new();
        runner.apply(event, &mut notices);
    }

    /// The screen position of timeline cell `step` (one CFG row): the strip lies just above
    /// the legend, whose first swatch starts at the strip's left edge.
    fn cell_at(h: &Harness<'_, usize>, theme: &Theme, step: usize, total: usize) -> egui::Pos2 {
        let legend = h.get_by_label("computed").rect();
        let [sx, sy] = theme.spacing.item_spacing;
        let [cw, ch] = theme.spacing.timeline_cell;
        let cw = cw.min(theme.spacing.plot_size[0] / total as f32).max(1.0);
        let left = legend.left() - 9.0 - sx;
        egui::pos2(
            left + cw * (step as f32 + 0.5),
            legend.top() - sy - ch * 0.5,
        )
    }

    fn hover_text(h: &mut Harness<'_, usize>, at: egui::Pos2, expected: &str) {
        h.hover_at(at);
        h.run_steps(8);
        h.get_by_label_contains(expected);
    }

    #[test]
    fn a_new_run_marks_the_stats_stale_and_its_live_steps_take_their_place() {
        let (wf, sampler, stats_node) = measuring_workflow();
        let mut runner = Runner::new(std::env::temp_dir());
        runner.stats.insert(sampler, Arc::new(fake_stats(16)));
        let theme = Theme::builtin("dark").expect("theme");
        let registry = Registry::builtin();
        let images = HashMap::new();
        let cases = [
            ("stats".to_string(), wf.clone(), stats_node),
            ("sampler".to_string(), wf.clone(), sampler),
        ];
        {
            let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 520.0]);
            h.run();
            assert!(h
                .query_by_label_contains("previous run: these statistics")
                .is_none());
        }

        // A new run starts (an empty document, whose events are never polled here): the
        // last run's statistics are marked stale at once.
        let run_id = runner.start(&Workflow::default()).expect("run started");
        assert!(runner.stale.contains(&sampler));
        {
            let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 520.0]);
            h.run();
            h.get_by_label_contains("previous run: these statistics");
            h.snapshot("detailed_stats_previous_run");
        }

        // Its first steps arrive: the live timeline replaces the stale one.
        apply(
            &mut runner,
            Event::RunStarted {
                run_id,
                order: vec![sampler, stats_node],
            },
        );
        apply(
            &mut runner,
            Event::NodeStarted {
                run_id,
                node: sampler,
            },
        );
        for index in 0..3 {
            apply(
                &mut runner,
                Event::Step {
                    run_id,
                    node: sampler,
                    step: live_step(index, 16),
                },
            );
        }
        let progress = MeasureProgress {
            phase: MeasurePhase::Cached,
            round: 1,
            rounds: 3,
            step: 3,
            steps: 16,
            runs_done: 0,
        };
        apply(
            &mut runner,
            Event::Measure {
                run_id,
                node: sampler,
                progress,
            },
        );
        {
            let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 520.0]);
            h.run();
            assert!(h
                .query_by_label_contains("previous run: these statistics")
                .is_none());
            // Baseline on: no "turn on the baseline" while it measures.
            h.get_by_label_contains("measuring: cached round 1/3, step 3/16");
            assert!(h
                .query_by_label_contains("turn on the Sampler's baseline")
                .is_none());
            let at = cell_at(&h, &theme, 1, 16);
            hover_text(&mut h, at, "step 1 (batched): computed");
            let at = cell_at(&h, &theme, 10, 16);
            hover_text(&mut h, at, "step 10: not run yet");
        }

        // The uncached rounds are not silent: the Sampler's bar says where they are.
        apply(
            &mut runner,
            Event::Measure {
                run_id,
                node: sampler,
                progress: MeasureProgress {
                    phase: MeasurePhase::Baseline,
                    round: 2,
                    rounds: 3,
                    step: 12,
                    steps: 16,
                    runs_done: 2,
                },
            },
        );
        let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 520.0]);
        *h.state_mut() = 1;
        h.run();
        h.get_by_role_and_label(
            egui::accesskit::Role::ProgressIndicator,
            "baseline round 2/3, step 12/16",
        );
        drop(h);

        // The Sampler's new stats end the stale marking.
        apply(
            &mut runner,
            Event::Stats {
                run_id,
                node: sampler,
                stats: Arc::new(fake_stats(16)),
            },
        );
        assert!(!runner.stale.contains(&sampler));
        let (_, stale) = runner.stats_shown(&wf, stats_node).expect("stats");
        assert!(!stale);
    }

    /// A finished run's stats with a measurement of `baseline_ms` against `cached_ms` rounds.
    fn measured_stats(baseline_ms: &[f64], cached_ms: &[f64]) -> SamplerStats {
        let mut s = fake_stats(16);
        let ideal = s.summary.as_ref().map_or(1.0, |x| x.ideal_speedup);
        let runs = |v: &[f64]| -> Vec<RunTime> {
            v.iter()
                .map(|&wall_ms| RunTime {
                    wall_ms,
                    cpu_ms: Some(wall_ms * 1.5),
                })
                .collect()
        };
        s.measured = Measured::from_rounds(
            &runs(baseline_ms),
            &runs(cached_ms),
            ideal,
            (31.5, 0.97),
            true,
            Some(4.0),
        );
        s
    }

    fn totals_harness(stats: &SamplerStats) -> Harness<'_, ()> {
        let theme = Theme::builtin("dark").expect("theme");
        let h = Harness::builder().with_size([460.0, 260.0]).build_ui_state(
            move |ui, _: &mut ()| {
                let input = StatsInput {
                    stats: Some(stats),
                    ..StatsInput::default()
                };
                egui::Frame::new()
                    .fill(theme.colors.node.color())
                    .inner_margin(8.0)
                    .show(ui, |ui| stats_view::totals(ui, &theme, &input));
            },
            (),
        );
        Theme::builtin("dark").expect("theme").apply(&h.ctx);
        h
    }

    #[test]
    fn a_speedup_beyond_the_ideal_is_flagged_as_noise_not_shown_as_a_result() {
        let noisy = measured_stats(&[300.0, 310.0, 290.0], &[100.0, 105.0, 95.0]);
        let m = noisy.measured.as_ref().expect("measured");
        assert_eq!(m.verdict, Verdict::Noisy);
        let mut h = totals_harness(&noisy);
        h.run();
        h.get_by_label_contains("noisy measurement: 3.00× (2.76–3.26×)");
        h.get_by_label_contains("3 interleaved; load average 4.00");
        h.get_by_label_contains("the spread: not a result");
        assert!(h.query_by_label_contains("% of the ideal").is_none());
        h.snapshot("detailed_stats_noisy_measurement");
        drop(h);

        // Above the ideal but within the spread: shown as the ideal.
        let ideal = m.ideal_speedup;
        let at_ideal = measured_stats(
            &[
                100.0 * ideal + 20.0,
                100.0 * ideal - 30.0,
                100.0 * ideal + 10.0,
            ],
            &[100.0, 110.0, 95.0],
        );
        assert_eq!(
            at_ideal.measured.as_ref().map(|m| m.verdict),
            Some(Verdict::WithinNoise)
        );
        let mut h = totals_harness(&at_ideal);
        h.run();
        h.get_by_label_contains(&format!("at the ideal {ideal:.2}×"));
        drop(h);

        // Below the ideal: a result, with its range, CPU time and rounds.
        let plain = measured_stats(&[110.0, 100.0, 120.0], &[100.0, 98.0, 104.0]);
        let mut h = totals_harness(&plain);
        h.run();
        h.get_by_label_contains("1.10× (0.96–1.22×)");
        h.get_by_label_contains("3 interleaved;");
        h.get_by_label_contains("uncached 110 (100–120), cached 100 (98–104)");
        h.get_by_label_contains("uncached 165 (150–180), cached 150 (147–156)\n(1.10×)");
    }

    #[test]
    fn the_live_timeline_fills_on_a_second_run() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut wf = Workflow::default();
        let load = wf.add_node("LoadModel", [0.0, 0.0]);
        wf.set_param(load, "model", Value::Text("random-tiny".into()));
        let sampler = wf.add_node("Sampler", [300.0, 0.0]);
        let stats_node = wf.add_node("DetailedStats", [600.0, 0.0]);
        wf.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"));
        wf.connect(
            PortRef::new(sampler, "stats"),
            PortRef::new(stats_node, "stats"),
        );
        let steps = 100;
        wf.set_param(sampler, "steps", Value::Int(steps as i64));
        let mut runner = Runner::new(tmp.path().to_path_buf());
        let wait = |runner: &mut Runner, until: &dyn Fn(&Runner) -> bool| {
            let start = Instant::now();
            loop {
                runner.poll();
                if until(runner) {
                    return;
                }
                assert!(start.elapsed() < Duration::from_secs(300), "run timed out");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        runner.start(&wf).expect("first run");
        wait(&mut runner, &|r| !r.running);
        assert!(runner
            .stats_shown(&wf, stats_node)
            .is_some_and(|(_, stale)| !stale));

        // The second run (a new seed, so the Sampler runs again), caught part-way.
        let mut caught = false;
        for seed in 1..=5 {
            wf.set_param(sampler, "seed", Value::Int(seed));
            runner.start(&wf).expect("second run");
            wait(&mut runner, &|r| {
                !r.running || r.live.get(&sampler).is_some_and(|l| !l.steps.is_empty())
            });
            let done = runner.live.get(&sampler).map_or(0, |l| l.steps.len());
            if runner.running && done < steps && runner.stale.contains(&sampler) {
                caught = true;
                break;
            }
            wait(&mut runner, &|r| !r.running);
        }
        assert!(caught, "a second run was seen part-way");
        let theme = Theme::builtin("dark").expect("theme");
        let registry = Registry::builtin();
        let images = HashMap::new();
        let cases = [("stats".to_string(), wf.clone(), stats_node)];
        let mut h = body_harness(&cases, &runner, &theme, &registry, &images, [460.0, 420.0]);
        h.run();
        assert!(h
            .query_by_label_contains("previous run: these statistics")
            .is_none());
        let at = cell_at(&h, &theme, 0, steps);
        hover_text(&mut h, at, "step 0 (batched): computed");
        let at = cell_at(&h, &theme, steps - 1, steps);
        hover_text(&mut h, at, &format!("step {}: not run yet", steps - 1));
    }
}

#[path = "editor/rough_edges.rs"]
mod rough_edges;

#[path = "editor/compare_view.rs"]
mod compare_view;

#[path = "editor/pipeline.rs"]
mod pipeline;
