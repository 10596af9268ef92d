//! Parity with cache-dit 1.5.3's DBPrune (traces of the real library by
//! tools/make_dbprune_traces.py; on DiT with the one-line arity fix that stock 1.5.3 needs to
//! run Pattern_3 models at all): on the 12-block trace DiT (batched and separate CFG) and the
//! FLUX.1 fixture (both streams, the flattened 4-block order), across thresholds, Fn/Bn,
//! `non_prune_block_ids`, warmup and its interval, both limits, the dynamic threshold and the
//! steps mask, every block of every call is pruned or computed for the same reason as in
//! cache-dit, every measured diff agrees within 1e-5 relative and the final latents within 1e-4.

use cachedit_nodes::cache::config::{MaskPolicy, MaskSource, StepsMask};
use cachedit_nodes::cache::dbprune::DbPruneParams;
use cachedit_nodes::cache::{CallRecord, StepCacheConfig, Strategy};
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::sampling::denoise::CfgMode;
use candle_core::Tensor;
use serde_json::Value;

mod traces;
use traces::{dit_settings, flux_pipeline, flux_settings, metadata, run, runs, tensors, trace_dit};

const TRACES: &str = "dbprune_traces.safetensors";

fn config(r: &Value) -> StepCacheConfig {
    let p = &r["prune"];
    let int = |k: &str| p[k].as_i64().expect(k);
    let mut c = StepCacheConfig {
        strategy: Strategy::DbPrune,
        ..StepCacheConfig::default()
    };
    c.db.fn_compute_blocks = int("Fn_compute_blocks") as usize;
    c.db.bn_compute_blocks = int("Bn_compute_blocks") as usize;
    c.db.residual_diff_threshold = p["residual_diff_threshold"].as_f64().expect("thr");
    c.db.max_warmup_steps = int("max_warmup_steps") as usize;
    c.db.warmup_interval = int("warmup_interval") as usize;
    c.db.max_cached_steps = int("max_cached_steps");
    c.db.max_continuous_cached_steps = int("max_continuous_cached_steps");
    c.db.cfg_diff_compute_separate = p["cfg_diff_compute_separate"] == true;
    c.db.steps_mask = p["steps_computation_mask"]
        .as_array()
        .map(|bits| StepsMask {
            source: MaskSource::Custom(bits.iter().map(|b| b.as_i64() == Some(1)).collect()),
            policy: if p["steps_computation_policy"] == "static" {
                MaskPolicy::Static
            } else {
                MaskPolicy::Dynamic
            },
        });
    c.dbprune = DbPruneParams {
        non_prune_block_ids: serde_json::from_value(p["non_prune_block_ids"].clone()).expect("ids"),
        enable_dynamic_prune_threshold: p["enable_dynamic_prune_threshold"] == true,
        max_dynamic_prune_threshold: p["max_dynamic_prune_threshold"].as_f64(),
        dynamic_prune_threshold_relax_ratio: p["dynamic_prune_threshold_relax_ratio"]
            .as_f64()
            .expect("ratio"),
    };
    c
}

fn err(ours: &Tensor, want: &Tensor) -> f32 {
    let max = |t: &Tensor| -> f32 {
        t.abs()
            .and_then(|a| a.flatten_all())
            .and_then(|a| a.max(0))
            .and_then(|a| a.to_scalar::<f32>())
            .expect("max")
    };
    max(&(ours - want).expect("diff")) / max(want).max(1e-12)
}

/// The run's per-call letters as cache-dit's fixture writes them.
fn letters(r: &Value) -> Vec<String> {
    r["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c[4].as_str().expect("letters").to_string())
        .collect()
}

fn check(
    r: &Value,
    f: &std::collections::HashMap<String, Tensor>,
    calls: &[CallRecord],
    latents: &Tensor,
    want: &Tensor,
) -> usize {
    let name = r["name"].as_str().expect("name");
    let ours: Vec<String> = calls
        .iter()
        .map(|c| c.pattern.clone().expect("a pattern per call"))
        .collect();
    assert_eq!(ours, letters(r), "{name}: per-block decisions");
    // Every measured diff (one per C or P, in call then block order) against cache-dit's.
    let diffs = f[&format!("diff/{name}/f32")]
        .to_vec1::<f64>()
        .expect("diffs");
    let measured: usize = ours
        .iter()
        .map(|p| p.chars().filter(|c| matches!(c, 'C' | 'P')).count())
        .sum();
    assert_eq!(measured, diffs.len(), "{name}: measured diffs");
    // The records carry each call's first measured diff: check those against the fixture.
    let mut at = 0;
    for c in calls {
        let n = c
            .pattern
            .as_deref()
            .map_or(0, |p| p.chars().filter(|x| matches!(x, 'C' | 'P')).count());
        if n > 0 {
            let ours = c.diff.expect("a diff");
            let theirs = diffs[at];
            assert!(
                (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1e-6),
                "{name} step {}: diff {ours} vs {theirs}",
                c.step
            );
        }
        at += n;
    }
    let e = err(latents, want);
    let pruned: usize = ours
        .iter()
        .map(|p| p.chars().filter(|c| matches!(c, 'P' | 's')).count())
        .sum();
    eprintln!("{name}: {pruned} blocks pruned, latents {e:.2e}");
    assert!(e <= 1e-4, "{name}: final latents {e}");
    pruned
}

#[test]
fn dbprune_on_the_trace_dit_prunes_the_blocks_cache_dit_pruned() {
    let f = tensors(TRACES);
    let loaded = trace_dit();
    let mut checked = 0;
    for r in runs(TRACES).iter().filter(|r| r["model"] == "trace_dit") {
        let name = r["name"].as_str().expect("name");
        if r["prune"]["cfg_compute_first"] == true || r.get("rejected").is_some() {
            continue;
        }
        let cfg = if r["cfg"] == "separate" {
            CfgMode::Separate
        } else {
            CfgMode::Batched
        };
        let (latents, calls) = run(
            &loaded.model,
            &dit_settings(cfg),
            &f["noise/dit"],
            config(r),
        );
        let pruned = check(r, &f, &calls, &latents, &f[&format!("final/{name}/f32")]);
        assert_eq!(
            pruned as u64,
            r["pruned"].as_u64().expect("pruned"),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 28);
}

#[test]
fn dbprune_on_flux_prunes_across_both_lists_with_both_streams() {
    let f = tensors(TRACES);
    let loaded = flux_pipeline();
    let prompt = metadata(TRACES)["flux_prompt"]
        .as_str()
        .expect("prompt")
        .to_string();
    let settings = flux_settings(&loaded, &prompt, 1.0);
    let mut checked = 0;
    for r in runs(TRACES)
        .iter()
        .filter(|r| r["model"] == "flux_pipeline")
    {
        // cache-dit's default wiring flattens FLUX's lists into one run order, as here; its
        // two-context alternative is not offered.
        if r["flux_lists"] != "flattened" {
            continue;
        }
        let name = r["name"].as_str().expect("name");
        let (latents, calls) = run(&loaded.model, &settings, &f["noise/flux"], config(r));
        let want = unpack(&f[&format!("final/{name}/f32")], 8, 8).expect("unpack");
        check(r, &f, &calls, &latents, &want);
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[test]
fn dbprune_refuses_what_cache_dit_cannot_run() {
    let lists = trace_dit().model.block_lists().to_vec();
    let mut c = StepCacheConfig {
        strategy: Strategy::DbPrune,
        ..StepCacheConfig::default()
    };
    c.db.cfg_diff_compute_separate = false;
    let e = cachedit_nodes::cache::hook_for_run::<cachedit_nodes::models::AnyModel>(
        std::sync::Arc::new(c.clone()),
        &lists,
        25,
    )
    .err()
    .expect("refused");
    assert_eq!(e.field, "cfg_diff_compute_separate");
    c.db.cfg_diff_compute_separate = true;
    c.db.fn_compute_blocks = 0;
    let e = cachedit_nodes::cache::hook_for_run::<cachedit_nodes::models::AnyModel>(
        std::sync::Arc::new(c.clone()),
        &lists,
        25,
    )
    .err()
    .expect("refused");
    assert_eq!(e.field, "Fn_compute_blocks");
    c.db.fn_compute_blocks = 1;
    c.db.residual_diff_threshold = 0.1;
    assert_eq!(c.signature(), "DBPrune_F1B0_W8I1M0MC0_R0.1");
}
