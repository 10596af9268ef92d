//! The rough edges a new user hits first: examples opened as copies, comments kept or asked
//! about, nodes that never overlap, zoom that steps and fits, glyphs that draw, labels and
//! params that fit the strategy, one tooltip at a time, Enter in every add-node menu.

use super::*;
use cachedit::gui::canvas::{stepped_zoom, ZOOM_LEVELS};

/// The example workflows, sorted.
fn examples() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join("workflows"))
        .expect("workflows/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ron"))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "{out:?}");
    out
}

/// Where a widget inside a node is on screen (widgets in nodes report graph coordinates).
fn in_node(h: &Harness<'_, EditorApp>, label: &str) -> egui::Pos2 {
    let center = h.get_by_label(label).rect().center();
    h.state().canvas.to_screen(center)
}

/// A node's position on the graph (its top-left corner, graph coordinates).
fn app_node_pos(h: &Harness<'_, EditorApp>, id: NodeId) -> (f32, f32) {
    let node = h
        .state()
        .doc
        .workflow()
        .nodes
        .iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("{id} is not in the workflow"))
        .clone();
    (node.pos[0], node.pos[1])
}

/// Every pair of drawn node rectangles that overlap, by node id.
fn overlaps(h: &Harness<'_, EditorApp>) -> Vec<(NodeId, NodeId)> {
    let app = h.state();
    let rects: Vec<(NodeId, egui::Rect)> = app
        .doc
        .workflow()
        .nodes
        .iter()
        .map(|n| {
            let r = app
                .canvas
                .node_rect(n.id)
                .unwrap_or_else(|| panic!("{} is not drawn", n.id));
            (n.id, r)
        })
        .collect();
    let mut out = Vec::new();
    for (i, (a, ra)) in rects.iter().enumerate() {
        for (b, rb) in &rects[i + 1..] {
            if ra.intersects(*rb) {
                out.push((*a, *b));
            }
        }
    }
    out
}

#[test]
fn an_example_opens_as_an_untitled_copy_and_save_asks_where() {
    let e = env();
    let example = repo().join("workflows/cache_adaptive.ron");
    let before = std::fs::read(&example).expect("example");
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&example).expect("opens");
    assert_eq!(app.doc.path, None, "an example is not the document's file");
    assert!(
        app.doc
            .display_name()
            .contains("copy of cache_adaptive.ron"),
        "{}",
        app.doc.display_name()
    );
    let sampler = node_of(app.doc.workflow(), "Sampler");
    app.doc.set_param(sampler, "seed", Value::Int(99));
    let mut h = harness(app);
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    match &h.state().dialog {
        Some(Dialog::SaveAs { path, .. }) => {
            let path = PathBuf::from(path);
            assert_eq!(
                path.file_name().and_then(|n| n.to_str()),
                Some("cache_adaptive.ron")
            );
            assert_ne!(
                path.parent().and_then(|p| p.canonicalize().ok()),
                repo().join("workflows").canonicalize().ok(),
                "not proposed over the example"
            );
        }
        other => panic!("Ctrl+S on an example asks where to save, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&example).expect("example"),
        before,
        "untouched"
    );
    // Saved elsewhere, it is the document's own file from then on.
    h.state_mut().dialog = None;
    let mine = e.options.config_dir.join("mine.ron");
    std::fs::create_dir_all(&e.options.config_dir).expect("dir");
    h.state_mut().save_to(&mine).expect("save");
    assert_eq!(h.state().doc.path.as_deref(), Some(mine.as_path()));
    assert_eq!(h.state().doc.display_name(), "mine.ron");
}

#[test]
fn saving_keeps_the_leading_comments_and_asks_before_dropping_the_others() {
    let e = env();
    std::fs::create_dir_all(&e.options.config_dir).expect("dir");
    let header = "// My sweep: keep this note.\n// Second line.\n";
    let body = load_workflow(&repo().join("workflows/default.ron")).expect("default");
    let text = cachedit_nodes::graph::ron_io::to_ron_string(&body).expect("ron");

    // Only a header: saved straight away, the header kept.
    let plain = e.options.config_dir.join("plain.ron");
    std::fs::write(&plain, format!("{header}{text}")).expect("write");
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&plain).expect("opens");
    let sampler = node_of(app.doc.workflow(), "Sampler");
    app.doc.set_param(sampler, "seed", Value::Int(5));
    let mut h = harness(app);
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert!(h.state().dialog.is_none(), "{:?}", h.state().dialog);
    let saved = std::fs::read_to_string(&plain).expect("saved");
    assert!(saved.starts_with(header), "{saved}");
    assert!(!h.state().doc.is_dirty());

    // A comment inside the workflow: the save asks first, Cancel leaves the file alone.
    let commented = e.options.config_dir.join("commented.ron");
    let with_body = text.replacen("nodes: [", "nodes: [ // the graph", 1);
    std::fs::write(&commented, format!("{header}{with_body}")).expect("write");
    h.state_mut().open_path(&commented).expect("opens");
    let sampler = node_of(h.state().doc.workflow(), "Sampler");
    h.state_mut().doc.set_param(sampler, "seed", Value::Int(6));
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert!(
        matches!(h.state().dialog, Some(Dialog::DropComments { .. })),
        "{:?}",
        h.state().dialog
    );
    h.get_by_label("Cancel").click();
    h.run();
    assert_eq!(
        std::fs::read_to_string(&commented).expect("file"),
        format!("{header}{with_body}"),
        "cancel writes nothing"
    );
    // Agreed to, the header stays and the inner comment goes.
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    h.get_by_label("Save without them").click();
    h.run();
    let saved = std::fs::read_to_string(&commented).expect("saved");
    assert!(saved.starts_with(header), "{saved}");
    assert!(!saved.contains("the graph"), "{saved}");
    assert!(!h.state().doc.is_dirty());
    // Once dropped, later saves do not ask again.
    let sampler = node_of(h.state().doc.workflow(), "Sampler");
    h.state_mut().doc.set_param(sampler, "seed", Value::Int(7));
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert!(h.state().dialog.is_none(), "{:?}", h.state().dialog);
}

#[test]
fn no_two_nodes_overlap_when_an_example_opens_nor_after_its_run() {
    for path in examples() {
        let e = env();
        let mut app = EditorApp::new(e.options.clone());
        app.open_path(&path).expect("example opens");
        let mut h = fitted(app);
        h.run();
        let found = overlaps(&h);
        assert!(found.is_empty(), "{}: {found:?} overlap", path.display());
        // Nodes grow with a run's images and statistics (the fast built-in model, same
        // settings otherwise).
        for n in h.state().doc.workflow().nodes.clone() {
            if n.kind == "LoadModel" {
                h.state_mut()
                    .doc
                    .set_param(n.id, "model", Value::Text("random-tiny".into()));
            }
            if n.kind == "Sampler" {
                h.state_mut()
                    .doc
                    .set_param(n.id, "baseline_rounds", Value::Int(1));
            }
        }
        h.state_mut().run();
        step_until_idle(&mut h, Duration::from_secs(180));
        assert_eq!(
            h.state().runner.outcome.map(|o| o.0),
            Some(RunOutcome::Completed),
            "{}",
            path.display()
        );
        for _ in 0..4 {
            h.step();
        }
        let found = overlaps(&h);
        assert!(
            found.is_empty(),
            "{} after a run: {found:?} overlap",
            path.display()
        );
    }
}

#[test]
fn new_nodes_land_in_free_space_near_the_view() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/cache_adaptive.ron"))
        .expect("example");
    let mut h = fitted(app);
    // From the palette, twice: both in the view, touching nothing.
    for kind in ["Sampler", "SaveImage"] {
        h.state_mut().add_from_palette(kind);
        h.run();
        assert!(overlaps(&h).is_empty(), "{kind}: {:?}", overlaps(&h));
    }
    let view_center = h.state().canvas.view_center().expect("drawn");
    let added = h.state().doc.workflow().nodes.last().expect("node").id;
    let rect = h.state().canvas.node_rect(added).expect("drawn");
    let center = h.state().canvas.to_screen(view_center);
    assert!(
        rect.center().distance(center) < 900.0,
        "{rect:?} far from the view's centre {center:?}"
    );
    // A duplicate lands beside its original, on nothing.
    let sampler = node_of(h.state().doc.workflow(), "Sampler");
    let copies = h.state_mut().duplicate(&[sampler]);
    h.run();
    assert_eq!(copies.len(), 1);
    assert!(overlaps(&h).is_empty(), "duplicate: {:?}", overlaps(&h));
    let original = h.state().canvas.node_rect(sampler).expect("drawn");
    let copy = h.state().canvas.node_rect(copies[0]).expect("drawn");
    assert!(
        copy.center().distance(original.center()) < 1000.0,
        "{copy:?} vs {original:?}"
    );
    // A node added from the canvas menus at a spot a node covers moves beside it.
    let covered = h.state().canvas.node_rect(sampler).expect("drawn").center();
    let at = h.state().canvas.to_graph(covered);
    h.state_mut().apply(cachedit::gui::canvas::Action::AddNode {
        kind: "DetailedStats".into(),
        pos: [at.x, at.y],
        wire: None,
    });
    h.run();
    assert!(overlaps(&h).is_empty(), "menu add: {:?}", overlaps(&h));
}

#[test]
fn ctrl_wheel_zooms_in_steps_about_the_pointer_and_f_zooms_to_fit() {
    assert_eq!(stepped_zoom(1.0, 1), 1.1);
    assert_eq!(stepped_zoom(1.0, -2), 0.8);
    assert_eq!(
        stepped_zoom(0.93, 1),
        1.0,
        "an odd zoom steps to the next level"
    );
    assert_eq!(stepped_zoom(2.0, 3), 2.0, "clamped at the top");
    assert_eq!(stepped_zoom(0.2, -1), 0.2, "and at the bottom");
    assert!(ZOOM_LEVELS.contains(&1.0));

    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/default.ron"))
        .expect("example");
    let mut h = fitted(app);
    let fitted_zoom = h.state().canvas.zoom();
    let view = h.state().canvas.view_center().expect("drawn");
    let pointer = h.state().canvas.to_screen(view);
    let under = h.state().canvas.to_graph(pointer);
    let wheel = |h: &mut Harness<'_, EditorApp>, notches: f32| {
        h.hover_at(pointer);
        h.step();
        h.event_modifiers(
            egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Line,
                delta: egui::vec2(0.0, notches),
                phase: egui::TouchPhase::Move,
                modifiers: Modifiers::COMMAND,
            },
            Modifiers::COMMAND,
        );
        h.step();
        h.step();
    };
    wheel(&mut h, 1.0);
    let one_up = h.state().canvas.zoom();
    assert_eq!(one_up, stepped_zoom(fitted_zoom, 1), "one notch, one level");
    let still = h.state().canvas.to_graph(pointer);
    assert!(
        still.distance(under) < 0.5,
        "{still:?} moved from {under:?}"
    );
    // Far in: most of the graph is off screen; F brings all of it back, zoomed out to fit.
    for _ in 0..6 {
        wheel(&mut h, 1.0);
    }
    let zoomed_in = h.state().canvas.zoom();
    assert_eq!(zoomed_in, 2.0);
    h.key_press(Key::F);
    h.run();
    let app = h.state();
    let fit = app.canvas.zoom();
    assert!(fit < zoomed_in, "F zooms out to fit: {fit}");
    for n in &app.doc.workflow().nodes {
        let r = app.canvas.node_rect(n.id).expect("drawn");
        assert!(
            app.canvas.shows(r.left_top()) && app.canvas.shows(r.right_bottom()),
            "{} at {r:?} is not in view after F",
            n.id
        );
    }
    // Far out: F zooms back in.
    for _ in 0..12 {
        wheel(&mut h, -1.0);
    }
    assert_eq!(h.state().canvas.zoom(), 0.2);
    h.key_press(Key::F);
    h.run();
    assert!(h.state().canvas.zoom() > 0.2, "F zooms in to fit");
}

/// Every non-ASCII character the editor's source puts in a string literal.
fn non_ascii_in_sources() -> String {
    let mut chars = std::collections::BTreeSet::new();
    let mut stack = vec![repo().join("app/src/gui")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("source");
                for line in text.lines().filter(|l| {
                    let t = l.trim_start();
                    !t.starts_with("//")
                }) {
                    // Only what sits between quotes reaches the screen.
                    for (i, part) in line.split('"').enumerate() {
                        if i % 2 == 1 {
                            chars.extend(part.chars().filter(|c| !c.is_ascii()));
                        }
                    }
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn every_glyph_the_editor_draws_is_in_its_fonts() {
    let used = non_ascii_in_sources();
    assert!(
        used.contains('▶') && used.contains('…'),
        "the scan finds {used:?}"
    );
    let e = env();
    let mut h = harness(EditorApp::new(e.options.clone()));
    h.run();
    // A character no font has is drawn as the replacement glyph; a drawn character must not
    // come out as that glyph. (`has_glyph` is wrong for characters of the replacement's own
    // font.)
    let font = egui::FontId::proportional(14.0);
    let uv = |c: char| {
        h.ctx.fonts_mut(|f| {
            let galley = f.layout_no_wrap(c.to_string(), font.clone(), egui::Color32::WHITE);
            galley.rows[0].row.glyphs[0].uv_rect
        })
    };
    let replacement = uv('\u{e000}');
    let missing: Vec<char> = format!("{used}→✕")
        .chars()
        .filter(|c| uv(*c) == replacement)
        .collect();
    assert!(missing.is_empty(), "no glyph for {missing:?}");
    // And the check can tell: before the editor installs its fonts, "✕" was one of them.
    let mut plain = Harness::new_ui(|ui| {
        ui.label("egui's own fonts");
    });
    plain.run();
    let bare = plain.ctx.clone();
    let bare_uv = |c: char| {
        bare.fonts_mut(|f| {
            let galley = f.layout_no_wrap(c.to_string(), font.clone(), egui::Color32::WHITE);
            galley.rows[0].row.glyphs[0].uv_rect
        })
    };
    assert_eq!(bare_uv('✕'), bare_uv('\u{e000}'), "egui's defaults lack ✕");
}

#[test]
fn the_config_shows_only_the_params_and_labels_of_its_strategy() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/cache_adaptive.ron"))
        .expect("example");
    let config = node_of(app.doc.workflow(), "CacheDitAdvancedConfig");
    let mut h = fitted(app);
    // Open the Advanced section of the config node (the Sampler has one too: take the one
    // nearest the config node's corner).
    let corner = {
        let n = app_node_pos(&h, config);
        egui::pos2(n.0, n.1)
    };
    let advanced = h
        .get_all_by_label("Advanced")
        .map(|n| n.rect().center())
        .min_by(|a, b| a.distance(corner).total_cmp(&b.distance(corner)))
        .map(|c| h.state().canvas.to_screen(c))
        .expect("an Advanced section");
    mouse_click(
        &mut h,
        advanced,
        egui::PointerButton::Primary,
        Modifiers::NONE,
    );
    let shows = |h: &Harness<'_, EditorApp>, label: &str| h.query_by_label(label).is_some();
    assert!(!shows(&h, "skip_interval"), "adaptive has no skip_interval");
    assert!(shows(&h, "residual_diff_threshold"));
    assert!(shows(&h, "max_cached_steps"));
    assert!(
        h.query_by_label_contains("counter schedules").is_none(),
        "no counter-schedule wording under adaptive"
    );
    h.state_mut()
        .doc
        .set_param(config, "strategy", Value::Text("fixed".into()));
    h.run();
    assert!(shows(&h, "skip_interval"));
    assert!(
        !shows(&h, "residual_diff_threshold"),
        "fixed has no threshold"
    );
    assert!(!shows(&h, "max_continuous_cached_steps"));
    assert!(h
        .query_by_label_contains("fixed schedule decides by step index")
        .is_some());
    h.state_mut()
        .doc
        .set_param(config, "strategy", Value::Text("dynamic".into()));
    h.run();
    assert!(shows(&h, "skip_interval") && shows(&h, "max_continuous_cached_steps"));
    assert!(!shows(&h, "scm_mode") && !shows(&h, "taylorseer_order"));
}

#[test]
fn hovering_a_param_shows_one_tooltip_only() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let sampler = app.add_from_palette("Sampler");
    let mut h = fitted(app);
    let registry = Registry::builtin();
    let spec = registry.spec("Sampler").expect("spec");
    let steps_help = spec.param("steps").expect("steps").help;
    let label = in_node(&h, "steps");
    h.hover_at(label);
    for _ in 0..40 {
        h.step();
    }
    assert!(
        h.query_by_label(steps_help).is_some(),
        "the param's help shows"
    );
    assert!(
        h.query_by_label(spec.help).is_none(),
        "the node's help does not show on top of it"
    );
    // The kind's help is the title's tooltip.
    let title = title_of(&h, sampler);
    h.hover_at(title);
    for _ in 0..40 {
        h.step();
    }
    assert!(h.query_by_label(spec.help).is_some());
    assert!(h.query_by_label(steps_help).is_none());
}

#[test]
fn enter_takes_the_first_match_in_the_canvas_menus() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    let sampler = app.add_from_palette("Sampler");
    let mut h = fitted(app);
    // The right-click menu.
    let at = empty_canvas(&h);
    mouse_click(&mut h, at, egui::PointerButton::Secondary, Modifiers::NONE);
    h.get_by_label("Add node");
    h.event(egui::Event::Text("stats".into()));
    let _ = h.run_ok();
    h.key_press(Key::Enter);
    let _ = h.run_ok();
    let wf = h.state().doc.workflow().clone();
    assert!(wf.nodes.iter().any(|n| n.kind == "DetailedStats"), "{wf:?}");
    // The dropped-wire menu: the first kind that takes an image.
    let to = empty_canvas(&h);
    let from = pin(&h, sampler, "image", false);
    mouse_drag(&mut h, from, to);
    h.get_by_label("Add a node that takes IMAGE");
    h.key_press(Key::Enter);
    let _ = h.run_ok();
    let wf = h.state().doc.workflow().clone();
    let save = node_of(&wf, "SaveImage");
    assert!(has_link(
        &wf,
        &PortRef::new(sampler, "image"),
        &PortRef::new(save, "image")
    ));
}

/// Pixels that differ from the background after drawing `text` in a layer scaled by `scale`
/// (as the canvas draws a zoomed-out node), with the editor's fonts or egui's own.
fn inked_pixels(text: &'static str, scale: f32, editor_fonts: bool) -> usize {
    let mut h = Harness::builder()
        .with_size([240.0, 60.0])
        .build_ui(move |ui| {
            let ctx = ui.ctx().clone();
            if editor_fonts {
                cachedit::gui::fonts::install(&ctx);
            }
            let area = egui::Area::new(egui::Id::new("zoomed")).fixed_pos(egui::pos2(4.0, 4.0));
            let shown = area.show(&ctx, |ui| {
                ui.label(text);
            });
            ctx.set_transform_layer(
                shown.response.layer_id,
                egui::emath::TSTransform::from_scaling(scale),
            );
        });
    h.run();
    let img = h.render().expect("render");
    let background = *img.get_pixel(230, 55);
    img.pixels()
        .filter(|p| {
            p.0.iter()
                .zip(background.0.iter())
                .any(|(a, b)| a.abs_diff(*b) > 100)
        })
        .count()
}

#[test]
fn underscores_and_points_still_draw_when_the_canvas_is_zoomed_out() {
    // At the body text size, egui's own font loses every underscore at these zooms (the
    // check can fail); the editor's keeps a line of them at every zoom down to 50 %.
    for zoom in [0.81, 0.75, 0.67] {
        assert_eq!(inked_pixels("________", zoom, false), 0, "at {zoom}");
    }
    for zoom in [1.0, 0.9, 0.81, 0.75, 0.67, 0.5] {
        let ours = inked_pixels("________", zoom, true);
        assert!(ours >= 20, "at {zoom}: only {ours} pixels of underscore");
    }
    // Decimal points fade the same way ("0.120" read "0 120"): the editor's are heavier.
    for zoom in [1.0, 0.9, 0.81, 0.75] {
        let (ours, egui) = (
            inked_pixels("........", zoom, true),
            inked_pixels("........", zoom, false),
        );
        assert!(
            ours >= 2 * egui,
            "at {zoom}: {ours} pixels of dots, egui's {egui}"
        );
    }
}

#[test]
fn output_pin_labels_are_whole_and_clear_of_their_pins() {
    let e = env();
    let mut app = EditorApp::new(e.options.clone());
    app.open_path(&repo().join("workflows/cache_adaptive.ron"))
        .expect("example");
    let registry = Registry::builtin();
    let h = fitted(app);
    let wf = h.state().doc.workflow().clone();
    let mut checked = 0;
    for node in &wf.nodes {
        let spec = registry.spec(&node.kind).expect("kind");
        for out in &spec.outputs {
            let pin = h
                .state()
                .canvas
                .pin_pos(&PortRef::new(node.id, out.name), false)
                .expect("pin drawn");
            // The label of this pin: the one with the port's full name on the pin's row.
            let label = h
                .get_all_by_label(out.name)
                .map(|n| {
                    let r = n.rect();
                    let canvas = &h.state().canvas;
                    egui::Rect::from_min_max(canvas.to_screen(r.min), canvas.to_screen(r.max))
                })
                .find(|r| (r.center().y - pin.y).abs() < 6.0 && r.right() < pin.x)
                .unwrap_or_else(|| panic!("{} {}: no whole label by its pin", node.id, out.name));
            assert!(
                label.height() < 20.0,
                "{} {}: the label wraps ({label:?})",
                node.id,
                out.name
            );
            assert!(
                pin.x - label.right() >= 8.0,
                "{} {}: the label runs into the pin ({label:?}, pin at {pin:?})",
                node.id,
                out.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked}");
}
