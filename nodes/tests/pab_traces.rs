//! Parity with diffusers' Pyramid Attention Broadcast (diffusers 0.42.1, traces of the real
//! hook by tools/make_pab_traces.py): on the 12-block trace DiT (batched CFG) and the FLUX.1
//! fixture (with and without true CFG), at several skip ranges and timestep windows, every
//! attention module of every call computes or reuses as diffusers' did, and the final latents
//! agree within 1e-4.

use cachedit_nodes::cache::pab::PabParams;
use cachedit_nodes::cache::{CallRecord, Decision, StepCacheConfig, Strategy};
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::sampling::denoise::CfgMode;
use candle_core::Tensor;
use serde_json::Value;

mod traces;
use traces::{dit_settings, flux_pipeline, flux_settings, run, runs, tensors, trace_dit, window};

const TRACES: &str = "pab_traces.safetensors";

fn config(r: &Value) -> StepCacheConfig {
    let c = &r["config"];
    StepCacheConfig {
        pab: PabParams {
            block_skip_range: c["spatial_attention_block_skip_range"].as_u64().expect("N") as usize,
            timestep_skip_range: window(&c["spatial_attention_timestep_skip_range"]),
        },
        ..StepCacheConfig::threshold_free(Strategy::Pab)
    }
}

/// Per call, the modules diffusers reused.
fn reused_per_call(r: &Value) -> Vec<usize> {
    r["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            c["attn"]
                .as_array()
                .expect("attn")
                .iter()
                .filter(|m| m[1] == false)
                .count()
        })
        .collect()
}

fn check(name: &str, r: &Value, calls: &[CallRecord], latents: &Tensor, want: &Tensor) {
    let ours: Vec<usize> = calls.iter().map(|c| c.attention_reused).collect();
    assert_eq!(ours, reused_per_call(r), "{name}: reused modules per call");
    for c in calls {
        let reused = c.attention_reused > 0;
        assert_eq!(c.decision == Decision::Reused, reused, "{name}: {c:?}");
        assert_eq!(c.blocks_run, c.blocks_total, "{name}: every block runs");
        if reused {
            assert!(c.block_work() < c.blocks_total as f64, "{name}: work saved");
        }
    }
    let e = traces_err(latents, want);
    eprintln!(
        "{name}: {} of {} module calls reused, latents {e:.2e}",
        ours.iter().sum::<usize>(),
        r["module_calls"]
    );
    assert!(e <= 1e-4, "{name}: final latents {e}");
}

fn traces_err(ours: &Tensor, want: &Tensor) -> f32 {
    let max = |t: &Tensor| -> f32 {
        t.abs()
            .and_then(|a| a.flatten_all())
            .and_then(|a| a.max(0))
            .and_then(|a| a.to_scalar::<f32>())
            .expect("max")
    };
    max(&(ours - want).expect("diff")) / max(want).max(1e-12)
}

#[test]
fn pab_on_the_trace_dit_reuses_the_modules_diffusers_reused() {
    let f = tensors(TRACES);
    let loaded = trace_dit();
    let settings = dit_settings(CfgMode::Batched);
    let mut checked = 0;
    for r in runs(TRACES).iter().filter(|r| r["model"] == "trace_dit") {
        let name = r["name"].as_str().expect("name");
        // Cross-attention ranges hook nothing on DiT (it has none): no setting of ours to run.
        if r["config"]["spatial_attention_block_skip_range"].is_null() {
            continue;
        }
        let (latents, calls) = run(&loaded.model, &settings, &f["dit_noise"], config(r));
        check(
            name,
            r,
            &calls,
            &latents,
            &f[r["latents"].as_str().expect("key")],
        );
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn pab_on_flux_reuses_joint_attention_as_diffusers_with_and_without_true_cfg() {
    let f = tensors(TRACES);
    let loaded = flux_pipeline();
    let mut checked = 0;
    for r in runs(TRACES)
        .iter()
        .filter(|r| r["model"] == "flux_pipeline")
    {
        let name = r["name"].as_str().expect("name");
        if r["config"]["spatial_attention_block_skip_range"].is_null() {
            continue;
        }
        let prompt = r["prompt"].as_str().expect("prompt");
        let true_cfg = r["true_cfg_scale"].as_f64().unwrap_or(1.0);
        let settings = flux_settings(&loaded, prompt, true_cfg);
        let (latents, calls) = run(&loaded.model, &settings, &f["flux_noise"], config(r));
        let want = unpack(&f[r["latents"].as_str().expect("key")], 8, 8).expect("unpack");
        check(name, r, &calls, &latents, &want);
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn pab_signature_names_its_range_and_window_and_bad_windows_are_refused() {
    let c = StepCacheConfig::threshold_free(Strategy::Pab);
    assert_eq!(c.signature(), "PAB_N2_T100.0-800.0");
    let mut bad = c.clone();
    bad.pab.timestep_skip_range = (800.0, 100.0);
    let lists = trace_dit().model.block_lists().to_vec();
    let err = cachedit_nodes::cache::hook_for_run::<cachedit_nodes::models::AnyModel>(
        std::sync::Arc::new(bad),
        &lists,
        10,
    )
    .err()
    .expect("refused");
    assert_eq!(err.field, "spatial_attention_timestep_skip_range");
}
