//! The editor driven headlessly with egui_kittest: build, wire and run the default graph, watch
//! the stats fill in, cancel, undo/redo, save/reopen, malformed files; snapshots of every node
//! kind's body and of the Detailed Stats view.

use cachedit::gui::app::Dialog;
use cachedit::gui::body::{node_body, BodyContext};
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
use std::sync::Arc;
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
    };
    Env { _dir: dir, options }
}

fn harness(app: EditorApp) -> Harness<'static, EditorApp> {
    Harness::builder()
        .with_size([1400.0, 900.0])
        .build_ui_state(
            |ui, app: &mut EditorApp| {
                app.logic(ui.ctx());
                app.ui(ui);
            },
            app,
        )
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
    h.hover_at(from);
    h.step();
    h.drag_at(from);
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
    h.run();
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
