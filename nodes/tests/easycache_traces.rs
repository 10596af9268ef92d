//! Parity with ComfyUI's EasyCache. ComfyUI is not a library that runs here, so
//! tools/make_easycache_traces.py restates its rule (checked bit for bit against ComfyUI's own
//! `easycache_forward_wrapper` and `EasyCacheHolder` with ComfyUI's imports stubbed, in the
//! revision that slices the cache diff per branch) around diffusers' trace DiT (batched CFG)
//! and the FLUX.1 fixture: at several thresholds, windows and subsample factors every call is
//! skipped or computed as there, the compared sums agree within 1e-4 relative and the final
//! latents within 1e-4.

use cachedit_nodes::cache::easycache::EasyCacheParams;
use cachedit_nodes::cache::{CallRecord, Decision, StepCacheConfig, Strategy};
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::sampling::denoise::CfgMode;
use candle_core::Tensor;
use serde_json::Value;

mod traces;
use traces::{dit_settings, flux_pipeline, flux_settings, metadata, run, runs, tensors, trace_dit};

const TRACES: &str = "easycache_traces.safetensors";

fn config(r: &Value) -> StepCacheConfig {
    StepCacheConfig {
        easycache: EasyCacheParams {
            reuse_threshold: r["reuse_threshold"].as_f64().expect("thr"),
            start_percent: r["start_percent"].as_f64().expect("start"),
            end_percent: r["end_percent"].as_f64().expect("end"),
            subsample_factor: r["subsample"].as_u64().expect("sub") as usize,
        },
        ..StepCacheConfig::threshold_free(Strategy::EasyCache)
    }
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

fn check(r: &Value, calls: &[CallRecord], latents: &Tensor, want: &Tensor) {
    let name = r["name"].as_str().expect("name");
    let expected: Vec<bool> = serde_json::from_value(r["computed"].clone()).expect("computed");
    let ours: Vec<bool> = calls
        .iter()
        .map(|c| c.decision == Decision::Computed)
        .collect();
    assert_eq!(ours, expected, "{name}: decisions (true = computed)");
    for (i, (c, theirs)) in calls
        .iter()
        .zip(r["calls"].as_array().expect("calls"))
        .enumerate()
    {
        match theirs["cumulative"].as_f64() {
            Some(sum) => {
                let mine = c.diff.expect("the compared sum");
                assert!(
                    (mine - sum).abs() <= 1e-4 * sum.abs().max(1e-9),
                    "{name} call {i}: sum {mine} vs {sum}"
                );
            }
            None => assert_eq!(c.diff, None, "{name} call {i}: nothing compared"),
        }
    }
    let e = err(latents, want);
    eprintln!(
        "{name}: skipped {} of {}, latents {e:.2e}",
        expected.iter().filter(|c| !**c).count(),
        expected.len()
    );
    assert!(e <= 1e-4, "{name}: final latents {e}");
}

#[test]
fn easycache_on_the_trace_dit_skips_the_calls_comfyui_skips() {
    let f = tensors(TRACES);
    let loaded = trace_dit();
    let settings = dit_settings(CfgMode::Batched);
    let mut checked = 0;
    for r in runs(TRACES).iter().filter(|r| r["model"] == "trace_dit") {
        // ComfyUI measures on its first batch entry, the unconditional half; one trace measures
        // on the conditional half instead, a choice this port does not offer.
        if r["first_branch"] != "uncond" {
            continue;
        }
        let (latents, calls) = run(&loaded.model, &settings, &f["dit/noise"], config(r));
        check(r, &calls, &latents, &f[r["latents"].as_str().expect("key")]);
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn easycache_on_flux_skips_the_calls_comfyui_skips() {
    let f = tensors(TRACES);
    let loaded = flux_pipeline();
    let meta = metadata(TRACES);
    let prompt = meta["meta"]["flux"]["prompt"].as_str().expect("prompt");
    let settings = flux_settings(&loaded, prompt, 1.0);
    let mut checked = 0;
    for r in runs(TRACES)
        .iter()
        .filter(|r| r["model"] == "flux_pipeline")
    {
        let (latents, calls) = run(&loaded.model, &settings, &f["flux/noise"], config(r));
        let want = unpack(&f[r["latents"].as_str().expect("key")], 8, 8).expect("unpack");
        check(r, &calls, &latents, &want);
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn easycache_names_its_settings() {
    let c = StepCacheConfig::threshold_free(Strategy::EasyCache);
    assert_eq!(c.signature(), "EasyCache_R0.2_S0.15E0.95");
}
