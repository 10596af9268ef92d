//! End-to-end: every workflow in `workflows/` runs headless through the executor on a tiny
//! checkpoint the test writes itself; plus node reuse, cancel, errors and PNG round trips.

mod common;

use cachedit_nodes::cache::{
    schedule_preview, CallRecord, Decision, Planned, StepCacheConfig, Strategy,
};
use cachedit_nodes::exec::{Event, ExecConfig, Executor, RunId, RunOutcome};
use cachedit_nodes::graph::document::{NodeId, PortRef, Value, Workflow};
use cachedit_nodes::graph::ron_io::{load_workflow, parse_workflow};
use cachedit_nodes::image::png_io::{read_png, workflow_text_from_png};
use cachedit_nodes::models::dit::{random, DiTConfig};
use cachedit_nodes::models::loading::save_dit;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::sampling::stats::SamplerStats;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn tiny_config() -> DiTConfig {
    DiTConfig {
        num_attention_heads: 2,
        attention_head_dim: 16,
        in_channels: 3,
        out_channels: Some(6),
        // As many blocks as random-tiny, so the step-cache examples' block partitions fit.
        num_layers: 6,
        sample_size: 16,
        patch_size: 4,
        num_embeds_ada_norm: 10,
        ..DiTConfig::default()
    }
}

/// Writes a tiny random checkpoint in diffusers layout and returns its folder.
fn write_checkpoint(dir: &Path) -> PathBuf {
    let cfg = tiny_config();
    let tensors = random::random_tensors(&cfg, 11).expect("random weights");
    let path = dir.join("tiny-dit");
    save_dit(&path, &cfg, &tensors).expect("checkpoint written");
    path
}

fn workflows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// Points every Load Model node at `checkpoint`.
fn use_checkpoint(wf: &mut Workflow, checkpoint: &Path) {
    for node in wf.nodes.iter_mut().filter(|n| n.kind == "LoadModel") {
        node.params.insert(
            "model".into(),
            Value::Text(checkpoint.display().to_string()),
        );
    }
}

/// Collects one run's events until it finishes.
fn collect(exec: &Executor, run_id: RunId) -> Vec<Event> {
    common::collect_run(exec, run_id, Duration::from_secs(120))
}

fn outcome(events: &[Event]) -> RunOutcome {
    events
        .iter()
        .find_map(|e| match e {
            Event::RunFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .expect("run finished")
}

fn files(events: &[Event]) -> Vec<PathBuf> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FileWritten { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

fn reused(events: &[Event], node: NodeId) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::NodeFinished {
            node: n, reused, ..
        } if *n == node => Some(*reused),
        _ => None,
    })
}

fn errors(events: &[Event]) -> Vec<(Option<NodeId>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NodeError { node, message, .. } => Some((*node, message.clone())),
            _ => None,
        })
        .collect()
}

fn spawn(out: &Path) -> Executor {
    Executor::spawn(
        Registry::builtin(),
        ExecConfig {
            output_dir: out.to_path_buf(),
        },
    )
    .expect("executor starts")
}

#[test]
fn every_example_workflow_runs_and_its_png_restores_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let mut count = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .expect("workflows/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    entries.sort();
    for path in entries {
        let mut wf = load_workflow(&path).expect("example parses");
        use_checkpoint(&mut wf, &checkpoint);
        let out = tmp.path().join(path.file_stem().expect("stem"));
        let exec = spawn(&out);
        let run = exec.run(wf.clone()).expect("queued");
        let events = collect(&exec, run);
        assert_eq!(
            outcome(&events),
            RunOutcome::Completed,
            "{path:?}: {:?}",
            errors(&events)
        );
        let written = files(&events);
        let savers = wf.nodes.iter().filter(|n| n.kind == "SaveImage").count();
        assert_eq!(written.len(), savers, "{path:?}: one PNG per Save Image");
        for png in written {
            let img = read_png(&png).expect("png decodes");
            if wf
                .nodes
                .iter()
                .any(|n| n.kind == "Compare" || n.kind == "Sweep")
            {
                // A labelled comparison grid: at least the reference and one cell, enlarged.
                assert!(img.width >= 2 * 16 && img.height > 16, "{png:?}");
            } else {
                assert_eq!((img.width, img.height), (16, 16));
            }
            let text = workflow_text_from_png(&png).expect("workflow embedded");
            let restored = parse_workflow(&text, "png").expect("embedded workflow parses");
            assert_eq!(
                restored, wf,
                "{png:?}: the PNG restores the workflow it came from"
            );
        }
        let steps = events
            .iter()
            .filter(|e| matches!(e, Event::Step { .. }))
            .count();
        let expected: i64 = wf
            .nodes
            .iter()
            .filter(|n| n.kind == "Sampler")
            .map(|n| match n.params.get("steps") {
                Some(Value::Int(s)) => *s,
                _ => 25,
            })
            .sum();
        assert_eq!(steps as i64, expected, "{path:?}: one step event per step");
        count += 1;
    }
    assert!(count >= 2, "examples found: {count}");
}

fn simple_workflow(model: &Path, steps: i64) -> Workflow {
    let mut wf = Workflow::default();
    let load = wf.add_node("LoadModel", [0.0, 0.0]);
    let sampler = wf.add_node("Sampler", [300.0, 0.0]);
    let save = wf.add_node("SaveImage", [600.0, 0.0]);
    wf.set_param(load, "model", Value::Text(model.display().to_string()));
    wf.set_param(sampler, "steps", Value::Int(steps));
    wf.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"));
    wf.connect(PortRef::new(sampler, "image"), PortRef::new(save, "image"));
    wf
}

#[test]
fn unchanged_nodes_are_reused_and_a_sampler_change_keeps_the_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let exec = spawn(&tmp.path().join("out"));
    let mut wf = simple_workflow(&checkpoint, 3);
    let (load, sampler) = (NodeId(1), NodeId(2));

    let first = collect(&exec, exec.run(wf.clone()).expect("run"));
    assert_eq!(outcome(&first), RunOutcome::Completed);
    assert_eq!(reused(&first, load), Some(false));

    wf.set_param(sampler, "seed", Value::Int(5));
    let second = collect(&exec, exec.run(wf.clone()).expect("run"));
    assert_eq!(outcome(&second), RunOutcome::Completed);
    assert_eq!(reused(&second, load), Some(true), "model not reloaded");
    assert_eq!(reused(&second, sampler), Some(false), "sampler re-ran");

    wf.set_param(load, "dtype", Value::Text("f32".into()));
    let third = collect(&exec, exec.run(wf).expect("run"));
    assert_eq!(
        reused(&third, load),
        Some(false),
        "a model param change reloads"
    );
    assert_eq!(
        reused(&third, sampler),
        Some(false),
        "and re-runs what depends on it"
    );
}

#[test]
fn cancel_stops_between_steps_and_the_executor_stays_usable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let exec = spawn(&tmp.path().join("out"));
    let run = exec.run(simple_workflow(&checkpoint, 1000)).expect("run");
    let mut steps_seen = 0;
    let mut cancelled_at = None;
    let result = loop {
        let event = exec
            .events()
            .recv_timeout(Duration::from_secs(120))
            .expect("event");
        match event {
            Event::Step { step, .. } => {
                steps_seen += 1;
                if cancelled_at.is_none() && step.index >= 2 {
                    exec.cancel();
                    cancelled_at = Some(step.index);
                }
            }
            Event::RunFinished {
                run_id, outcome, ..
            } if run_id == run => break outcome,
            _ => {}
        }
    };
    assert_eq!(result, RunOutcome::Cancelled);
    assert!(steps_seen < 1000, "stopped early ({steps_seen} steps)");
    // Still usable, and the cancelled sampler is not memoized as finished.
    let again = collect(
        &exec,
        exec.run(simple_workflow(&checkpoint, 2)).expect("run"),
    );
    assert_eq!(outcome(&again), RunOutcome::Completed);
    assert_eq!(reused(&again, NodeId(2)), Some(false));
}

#[test]
fn a_node_error_names_the_node_and_the_executor_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let exec = spawn(&tmp.path().join("out"));
    let missing = tmp.path().join("no-such-model");
    let events = collect(&exec, exec.run(simple_workflow(&missing, 2)).expect("run"));
    assert_eq!(outcome(&events), RunOutcome::Failed);
    let errs = errors(&events);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, Some(NodeId(1)));
    assert!(errs[0].1.contains("LoadModel #1"), "{}", errs[0].1);
    assert!(errs[0].1.contains("no-such-model"), "{}", errs[0].1);

    // A class the model does not have fails in the sampler, named.
    let mut wf = simple_workflow(&checkpoint, 2);
    wf.set_param(NodeId(2), "class_label", Value::Int(50));
    let events = collect(&exec, exec.run(wf).expect("run"));
    let errs = errors(&events);
    assert_eq!(errs[0].0, Some(NodeId(2)));
    assert!(errs[0].1.contains("class_label"), "{}", errs[0].1);

    let ok = collect(
        &exec,
        exec.run(simple_workflow(&checkpoint, 2)).expect("run"),
    );
    assert_eq!(outcome(&ok), RunOutcome::Completed);
}

#[test]
fn validation_errors_arrive_as_events_on_their_nodes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let exec = spawn(&tmp.path().join("out"));
    let mut wf = simple_workflow(Path::new("x"), 2);
    wf.set_param(NodeId(2), "steps", Value::Int(0));
    wf.links.retain(|l| l.to.node != NodeId(3));
    let events = collect(&exec, exec.run(wf).expect("run"));
    assert_eq!(outcome(&events), RunOutcome::Failed);
    let errs = errors(&events);
    let nodes: Vec<Option<NodeId>> = errs.iter().map(|e| e.0).collect();
    assert!(nodes.contains(&Some(NodeId(2))), "{errs:?}");
    assert!(nodes.contains(&Some(NodeId(3))), "{errs:?}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::NodeStarted { .. })));
}

#[test]
fn same_seed_same_image_different_seed_different_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let mut pngs = Vec::new();
    for (i, seed) in [1i64, 1, 2].into_iter().enumerate() {
        // A fresh executor each time, so nothing is reused.
        let exec = spawn(&tmp.path().join(format!("out{i}")));
        let mut wf = simple_workflow(&checkpoint, 3);
        wf.set_param(NodeId(2), "seed", Value::Int(seed));
        let events = collect(&exec, exec.run(wf).expect("run"));
        pngs.push(read_png(&files(&events)[0]).expect("png").pixels);
    }
    assert_eq!(pngs[0], pngs[1]);
    assert_ne!(pngs[0], pngs[2]);
}

/// The call records a sampler streamed with its step events.
fn streamed_calls(events: &[Event], node: NodeId) -> Vec<CallRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step { node: n, step, .. } if *n == node => Some(step.calls.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The statistics a node sent.
fn stats_of(events: &[Event], node: NodeId) -> Arc<SamplerStats> {
    events
        .iter()
        .find_map(|e| match e {
            Event::Stats { node: n, stats, .. } if *n == node => Some(stats.clone()),
            _ => None,
        })
        .expect("stats event")
}

fn run_example(name: &str, tmp: &Path, checkpoint: &Path) -> (Workflow, Vec<Event>) {
    let mut wf = load_workflow(&workflows_dir().join(name)).expect("example parses");
    use_checkpoint(&mut wf, checkpoint);
    let exec = spawn(&tmp.join(name));
    let events = collect(&exec, exec.run(wf.clone()).expect("run"));
    assert_eq!(
        outcome(&events),
        RunOutcome::Completed,
        "{:?}",
        errors(&events)
    );
    (wf, events)
}

#[test]
fn cached_runs_execute_fewer_blocks_exactly_as_the_stats_say() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let blocks = tiny_config().num_layers;
    let (sampler, detailed) = (NodeId(3), NodeId(5));
    for name in [
        "cache_fixed.ron",
        "cache_dynamic.ron",
        "cache_adaptive.ron",
        "cache_taylorseer.ron",
        "cache_scm.ron",
    ] {
        let (_, events) = run_example(name, tmp.path(), &checkpoint);
        let calls = streamed_calls(&events, sampler);
        let stats = stats_of(&events, sampler);
        let summary = stats.summary.as_ref().expect("summary");
        let run: usize = calls.iter().map(|c| c.blocks_run).sum();
        assert_eq!(
            stats.calls, calls,
            "{name}: the stats hold the streamed records"
        );
        assert_eq!(stats.block_evaluations, run, "{name}");
        assert_eq!(summary.block_evaluations, run, "{name}");
        assert_eq!(
            summary.block_evaluations_uncached,
            calls.len() * blocks,
            "{name}"
        );
        // The middle blocks a reuse skips: F1B0 (TaylorSeer example) or F4B0, of 6.
        let skipped = if name == "cache_taylorseer.ron" { 5 } else { 2 };
        for c in &calls {
            let expected = match c.decision {
                Decision::Computed => blocks,
                Decision::Reused => blocks - skipped,
            };
            assert_eq!(c.blocks_run, expected, "{name}: {c:?}");
        }
        if name == "cache_fixed.ron" || name == "cache_dynamic.ron" {
            assert!(run < calls.len() * blocks, "{name}: schedules reuse");
        } else {
            // Random weights move the residual too much to reuse at 0.12, but the indicator
            // measured every post-warmup call that was not forced to compute.
            let measured = calls.iter().filter(|c| c.diff.is_some()).count();
            assert!(measured > 0, "{name}: diffs measured");
        }
        assert_eq!(
            *stats_of(&events, detailed),
            *stats,
            "{name}: Detailed Stats shows the same"
        );
        let measured = stats.measured.as_ref().expect("baseline timed");
        assert!(measured.baseline.wall_ms.median > 0.0 && measured.cached.wall_ms.median > 0.0);
        let file = files(&events)[0].clone();
        let file_name = file.file_name().and_then(|f| f.to_str()).unwrap_or("");
        assert!(
            file_name.starts_with(&format!("cached_{}_", summary.signature)),
            "{file_name}"
        );
    }
}

/// Runs one example on a fresh checkpoint; the folder lives as long as the returned guard.
fn run_fresh(name: &str) -> (tempfile::TempDir, Vec<Event>) {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let (_, events) = run_example(name, tmp.path(), &checkpoint);
    (tmp, events)
}

#[test]
fn the_fixed_schedule_is_known_before_the_run_and_kept() {
    let (_tmp, events) = run_fresh("cache_fixed.ron");
    let calls = streamed_calls(&events, NodeId(3));
    let config = StepCacheConfig {
        strategy: Strategy::Fixed,
        skip_interval: 2,
        ..StepCacheConfig::studio_default()
    };
    let preview = schedule_preview(&config, 25).expect("preview");
    let planned: Vec<usize> = (0..25)
        .filter(|&s| matches!(preview.steps[s], Planned::Reuse(_)))
        .collect();
    let reused: Vec<usize> = calls
        .iter()
        .filter(|c| c.decision == Decision::Reused)
        .map(|c| c.step)
        .collect();
    assert_eq!(reused, planned);
    assert_eq!(reused, vec![5, 7, 9, 11, 13, 15, 17, 19, 21, 23]);
    let run: usize = calls.iter().map(|c| c.blocks_run).sum();
    assert_eq!(
        run,
        25 * 6 - 10 * 2,
        "10 reused calls skip 2 middle blocks each"
    );
}

#[test]
fn separate_cfg_keeps_a_cache_state_per_branch() {
    let (_tmp, events) = run_fresh("cache_taylorseer.ron");
    let stats = stats_of(&events, NodeId(3));
    assert_eq!(stats.cfg_mode, "separate");
    assert_eq!(stats.transformer_calls, 50, "two calls per step");
    let summary = stats.summary.as_ref().expect("summary");
    let branches: Vec<&str> = summary.branches.iter().map(|b| b.branch.name()).collect();
    assert_eq!(branches, ["cond", "uncond"]);
    for step in events.iter().filter_map(|e| match e {
        Event::Step { step, .. } => Some(step),
        _ => None,
    }) {
        let order: Vec<&str> = step.calls.iter().map(|c| c.branch.name()).collect();
        assert_eq!(order, ["cond", "uncond"], "step {}", step.index);
    }
}

#[test]
fn a_cache_config_that_does_not_fit_the_run_is_a_sampler_error_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let checkpoint = write_checkpoint(tmp.path());
    let exec = spawn(&tmp.path().join("out"));
    let mut wf = load_workflow(&workflows_dir().join("cache_scm.ron")).expect("example");
    use_checkpoint(&mut wf, &checkpoint);
    wf.set_param(NodeId(3), "steps", Value::Int(5));
    let events = collect(&exec, exec.run(wf.clone()).expect("run"));
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, Some(NodeId(3)));
    assert!(
        errs[0].1.contains("scm_policy") && errs[0].1.contains("5"),
        "{}",
        errs[0].1
    );
    wf.set_param(NodeId(3), "steps", Value::Int(10));
    wf.set_param(NodeId(2), "Fn_compute_blocks", Value::Int(7));
    let events = collect(&exec, exec.run(wf).expect("run"));
    let errs = errors(&events);
    assert!(
        errs[0].1.contains("Fn_compute_blocks") && errs[0].1.contains("6 blocks"),
        "{}",
        errs[0].1
    );
}

/// A kind whose run panics when its `explode` param is set (a stand-in for a library that
/// panics on a malformed file).
struct Fragile;

impl cachedit_nodes::registry::NodeKind for Fragile {
    fn spec(&self) -> cachedit_nodes::registry::KindSpec {
        use cachedit_nodes::registry::{KindSpec, ParamSpec};
        KindSpec {
            name: "Fragile",
            title: "Fragile",
            category: "test",
            help: "",
            inputs: vec![],
            outputs: vec![],
            params: vec![ParamSpec::boolean("explode", true, "")],
        }
    }

    fn run(
        &self,
        _ctx: &cachedit_nodes::exec::context::NodeContext,
        _inputs: &cachedit_nodes::registry::Inputs,
        params: &cachedit_nodes::registry::Params,
    ) -> Result<cachedit_nodes::registry::Outputs, cachedit_nodes::registry::NodeError> {
        if params.boolean("explode")? {
            let args: Vec<u8> = Vec::new();
            // As candle's pickle reader did on a short tuple: an out-of-bounds index.
            let _ = args[3];
        }
        Ok(cachedit_nodes::registry::Outputs::new())
    }
}

#[test]
fn a_panic_in_a_node_is_an_error_on_that_node_and_the_executor_carries_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut registry = Registry::builtin();
    registry.register(Fragile);
    let exec = Executor::spawn(
        registry,
        ExecConfig {
            output_dir: tmp.path().to_path_buf(),
        },
    )
    .expect("executor starts");
    let mut wf = Workflow::default();
    let node = wf.add_node("Fragile", [0.0, 0.0]);
    let events = collect(&exec, exec.run(wf.clone()).expect("run"));
    assert_eq!(outcome(&events), RunOutcome::Failed);
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, Some(node));
    assert!(
        errs[0].1.contains("Fragile #1") && errs[0].1.contains("internal error"),
        "{errs:?}"
    );
    assert!(errs[0].1.contains("index out of bounds"), "{errs:?}");
    // The same executor runs the next workflow.
    wf.set_param(node, "explode", Value::Bool(false));
    let events = collect(&exec, exec.run(wf).expect("second run"));
    assert_eq!(outcome(&events), RunOutcome::Completed);
}
