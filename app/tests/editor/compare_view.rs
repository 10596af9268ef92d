//! The comparison view and the run history driven as a user would: run a Compare node, open
//! the view from its body, zoom the grid, toggle the difference map, flip A/B, click a point
//! of the scatter, cancel a long comparison and keep its finished cells, and compare two
//! history entries in one view.

use super::*;
use cachedit::gui::compare_view::Mode;

/// A Compare of two configs on two seeds, and a cached Sampler whose image is saved.
fn compare_workflow(steps: i64, seeds: &str) -> Workflow {
    let text = format!(
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", pos: (0.0, 0.0), params: {{"model": "random-tiny"}}),
            (id: 2, kind: "CacheDitAdvancedConfig", pos: (0.0, 200.0), params: {{"strategy": "fixed", "warmup": 1}}),
            (id: 3, kind: "CacheDitAdvancedConfig", pos: (0.0, 500.0), params: {{"strategy": "adaptive", "warmup": 1}}),
            (id: 4, kind: "Compare", pos: (400.0, 0.0), params: {{"seeds": "{seeds}", "classes": "0", "steps": {steps}, "rounds": 1}}),
            (id: 5, kind: "Sampler", pos: (400.0, 500.0), params: {{"steps": 4}}),
            (id: 6, kind: "SaveImage", pos: (800.0, 500.0), params: {{"filename_prefix": "s"}}),
        ], links: [
            (from: (node: 1, port: "model"), to: (node: 4, port: "model")),
            (from: (node: 2, port: "cache"), to: (node: 4, port: "cache_1")),
            (from: (node: 3, port: "cache"), to: (node: 4, port: "cache_2")),
            (from: (node: 1, port: "model"), to: (node: 5, port: "model")),
            (from: (node: 2, port: "cache"), to: (node: 5, port: "cache")),
            (from: (node: 5, port: "image"), to: (node: 6, port: "image")),
        ])"#
    );
    cachedit_nodes::graph::ron_io::parse_workflow(&text, "test").expect("workflow parses")
}

/// Where a widget inside a node is on screen (widgets in nodes report graph coordinates).
fn in_node(h: &Harness<'_, EditorApp>, label: &str) -> egui::Pos2 {
    let center = h.get_by_label(label).rect().center();
    h.state().canvas.to_screen(center)
}

fn click(h: &mut Harness<'_, EditorApp>, at: egui::Pos2) {
    mouse_click(h, at, egui::PointerButton::Primary, Modifiers::NONE);
    let _ = h.run_ok();
}

#[test]
fn the_view_shows_the_grid_diff_map_ab_and_a_clickable_scatter() {
    let e = env();
    let mut h = fitted(app_with(&e, compare_workflow(6, "1, 2")));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(240));
    let _ = h.run_ok();

    // Open it from the Compare node's body.
    let at = in_node(&h, "Open comparison view");
    click(&mut h, at);
    assert!(h.state().compare_view.open, "the view opened");
    {
        let data = h.state().compare_view.data.as_ref().expect("data");
        assert_eq!(data.columns.len(), 3, "reference + 2 configs");
        assert_eq!(data.samples, vec![(1, 0), (2, 0)]);
        assert_eq!(data.columns[0].label, "ref");
    }
    // Every cell of every sample is drawn, at the zoom.
    for label in ["ref", "1", "2"] {
        for row in [1, 2] {
            h.get_by_label(&format!("cell {label} sample {row}"));
        }
    }
    let zoom = h.state().compare_view.zoom as f32;
    let cell = h.get_by_label("cell 1 sample 1").rect();
    let image = h.state().compare_view.data.as_ref().expect("data").columns[1].images[0].clone();
    assert_eq!(
        cell.width(),
        image.width as f32 * zoom,
        "nearest-neighbour zoom"
    );
    // The numbers head each column.
    assert!(h.query_all_by_label_contains("ideal").count() >= 2);
    assert!(h.query_all_by_label_contains("hit rate").count() >= 2);

    // Clicking a cell picks it.
    click(&mut h, cell.center());
    assert_eq!(h.state().compare_view.selected, Some(1));

    // The difference map: every drawn cell is then its difference from the reference.
    h.get_by_label("difference map").click();
    let _ = h.run_ok();
    assert!(h.state().compare_view.diff);
    let made = h.state().compare_view.textures_made();
    for col in 0..3 {
        for row in 0..2 {
            assert!(made.contains(&(col, row, true)), "{made:?}");
        }
    }
    h.get_by_label("difference map").click();
    let _ = h.run_ok();

    // The scatter: a point per config; clicking one picks its cell.
    h.get_by_label("speed–quality scatter");
    let points = h.state().compare_view.points_on_screen.clone();
    assert_eq!(points.len(), 2, "{points:?}");
    let (column, at) = points[1];
    click(&mut h, at);
    assert_eq!(h.state().compare_view.selected, Some(column));
    h.get_by_label_contains("Pareto front:");

    // A/B: the picked cell is B; dragging moves the split; Space shows B whole.
    h.get_by_label("A/B").click();
    let _ = h.run_ok();
    assert_eq!(h.state().compare_view.mode, Mode::AB);
    assert_eq!(h.state().compare_view.b, column);
    let view = h.get_by_label("A/B view").rect();
    let target = view.left_center() + egui::vec2(view.width() * 0.25, 0.0);
    click(&mut h, target);
    let split = h.state().compare_view.split;
    assert!((split - 0.25).abs() < 0.05, "split {split}");
    h.get_by_label_contains("B against A:");
    h.event(egui::Event::Key {
        key: Key::Space,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: Modifiers::NONE,
    });
    h.step();
    h.get_by_label_contains("(showing B)");
}

#[test]
fn cancelling_keeps_the_finished_samples_in_the_view() {
    let e = env();
    let mut h = harness(app_with(&e, compare_workflow(60, "1, 2, 3, 4, 5, 6, 7, 8")));
    h.state_mut().run();
    let start = Instant::now();
    // Wait for the first finished sample, then cancel.
    while h
        .state()
        .runner
        .comparisons
        .get(&NodeId(4))
        .is_none_or(|c| c.reference.samples.is_empty())
    {
        assert!(
            h.state().runner.running,
            "the run ended before a sample finished"
        );
        assert!(start.elapsed() < Duration::from_secs(240));
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.state_mut().open_compare_view(NodeId(4));
    h.state_mut().cancel();
    step_until_idle(&mut h, Duration::from_secs(120));
    let _ = h.run_ok();
    let kept = h
        .state()
        .compare_view
        .data
        .as_ref()
        .expect("data")
        .samples
        .len();
    assert!((1..8).contains(&kept), "{kept} samples kept");
    h.get_by_label_contains(&format!(
        "cancelled: the {kept} finished sample(s) are kept"
    ));
    h.get_by_label("cell 2 sample 1");
    // An unfinished comparison is not kept in the history.
    h.state_mut().history.wait_idle();
    assert!(h
        .state()
        .history
        .entries
        .iter()
        .all(|e| e.meta.kind != cachedit::gui::history::EntryKind::Comparison));
}

#[test]
fn two_history_entries_are_compared_in_one_view_and_their_workflow_restores() {
    let e = env();
    let mut h = fitted(app_with(&e, compare_workflow(4, "1")));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(240));
    h.state_mut().history.wait_idle();
    let _ = h.run_ok();
    {
        let kinds: Vec<_> = h
            .state()
            .history
            .entries
            .iter()
            .map(|e| e.meta.kind)
            .collect();
        use cachedit::gui::history::EntryKind::*;
        assert_eq!(
            kinds.len(),
            2,
            "the comparison and the cached Sampler: {kinds:?}"
        );
        assert!(kinds.contains(&Comparison) && kinds.contains(&Sampler));
        let sampler = h
            .state()
            .history
            .entries
            .iter()
            .find(|e| e.meta.kind == Sampler)
            .expect("sampler entry");
        assert_eq!(sampler.meta.columns[0].images.len(), 1, "its saved image");
    }
    // A second comparison with other settings (the Sampler's outputs are reused: no entry).
    let compare = NodeId(4);
    h.state_mut().doc.set_param(compare, "steps", Value::Int(5));
    h.state_mut().run();
    step_until_idle(&mut h, Duration::from_secs(240));
    h.state_mut().history.wait_idle();
    let _ = h.run_ok();
    assert_eq!(h.state().history.entries.len(), 3);

    // View → Run history; tick the two comparisons; compare them.
    h.get_by_label("View").click();
    let _ = h.run_ok();
    h.get_by_label("Run history").click();
    let _ = h.run_ok();
    assert!(h.state().history_open);
    let comparisons: Vec<usize> = h
        .state()
        .history
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.meta.kind == cachedit::gui::history::EntryKind::Comparison)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(comparisons.len(), 2);
    for n in &comparisons {
        h.get_by_label(&format!("tick entry {n}")).click();
        let _ = h.run_ok();
    }
    h.get_by_label("Compare the two ticked").click();
    let _ = h.run_ok();
    let data = h.state().compare_view.data.clone().expect("merged data");
    let labels: Vec<&str> = data.columns.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["A ref", "A 1", "A 2", "B ref", "B 1", "B 2"]);
    h.get_by_label("cell B 2 sample 1");
    // Each side's difference map is against its own reference.
    assert_eq!(data.reference_of(5), 3);
    assert_eq!(data.reference_of(2), 0);

    // Its workflow opens as an untitled copy with the settings of that run.
    let newest = h.state().history.entries[0].id.clone();
    let path = h.state().history.workflow_path(&newest);
    h.state_mut().open_path(&path).expect("opens");
    assert_eq!(h.state().doc.path, None, "never saved into the history");
    let steps = h
        .state()
        .doc
        .workflow()
        .node(compare)
        .and_then(|n| n.params.get("steps").cloned());
    assert_eq!(steps, Some(Value::Int(5)));
}

#[test]
fn c_opens_the_comparison_view_and_h_the_run_history() {
    let e = env();
    let mut h = fitted(app_with(&e, compare_workflow(4, "1")));
    h.key_press(Key::C);
    let _ = h.run_ok();
    assert!(h.state().compare_view.open);
    assert_eq!(
        h.state().compare_view.source,
        Some(cachedit::gui::compare_view::Source::Live(NodeId(4)))
    );
    h.get_by_label_contains("Nothing to compare yet");
    h.key_press(Key::C);
    let _ = h.run_ok();
    assert!(!h.state().compare_view.open, "C again closes it");
    h.key_press(Key::H);
    let _ = h.run_ok();
    assert!(h.state().history_open);
    h.get_by_label_contains("Every finished comparison");
}
