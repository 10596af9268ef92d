//! Parity with diffusers' First Block Cache (`FirstBlockCacheConfig`, diffusers 0.42.1), from
//! traces of the real hook (tools/make_fbcache_traces.py): on the 12-block trace DiT (25
//! DPM-Solver++ steps, batched CFG) and on the tiny FLUX.1 pipeline (12 steps, two streams) at
//! five thresholds each, the project's `fbcache` strategy makes the same decision on every
//! call, measures the same diffs (1e-5 relative) and ends within 1e-4 of diffusers' latents
//! (normalised max error). `--nocapture` prints the errors.

use cachedit_nodes::cache::hook::TransformerHook;
use cachedit_nodes::cache::{hook_for_run, Decision, StepCacheConfig};
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::models::AnyModel;
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, PromptSettings, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::Tensor;
use serde_json::Value;
use std::sync::Arc;

mod golden;
use golden::{fixtures, load, norm_err};

const TRACES: &str = "fbcache_traces.safetensors";

fn runs() -> Vec<Value> {
    let bytes = std::fs::read(fixtures().join(TRACES)).expect("fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("runs").cloned())
        .expect("runs");
    serde_json::from_str(&text).expect("runs JSON")
}

fn fbcache(threshold: f64) -> Arc<StepCacheConfig> {
    Arc::new(StepCacheConfig::first_block(threshold))
}

/// Runs `settings` from `noise` with an FBCache hook: the final sample and, per call, the
/// decision (true = computed) and the diff.
fn run(
    model: &AnyModel,
    settings: &SampleSettings,
    noise: &Tensor,
    threshold: f64,
) -> (Tensor, Vec<(bool, Option<f64>)>) {
    let mut hook: Box<dyn TransformerHook<AnyModel>> =
        hook_for_run(fbcache(threshold), model.block_lists(), settings.steps).expect("config");
    let mut calls = Vec::new();
    let out = denoise(model, settings, noise, hook.as_mut(), &mut |p| {
        calls.extend(
            p.calls
                .iter()
                .map(|c| (c.decision == Decision::Computed, c.diff)),
        );
        Flow::Continue
    })
    .expect("sampling");
    (out.sample, calls)
}

fn check(name: &str, run: &Value, ours: &[(bool, Option<f64>)], latents: &Tensor, want: &Tensor) {
    let reference: Vec<(bool, Option<f64>)> =
        serde_json::from_value(run["calls"].clone()).expect("calls");
    let decisions: Vec<bool> = ours.iter().map(|c| c.0).collect();
    let wanted: Vec<bool> = reference.iter().map(|c| c.0).collect();
    assert_eq!(decisions, wanted, "{name}: decisions (true = computed)");
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        match (a.1, b.1) {
            (Some(a), Some(b)) => {
                let e = (a - b).abs() / b.abs().max(1e-12);
                assert!(e <= 1e-5, "{name} call {i}: diff {a} vs diffusers {b}");
            }
            (None, None) => {}
            other => panic!("{name} call {i}: measured {other:?}"),
        }
    }
    let e = norm_err(latents, want);
    eprintln!(
        "{name}: reused {} of {}, latents {e:.2e}",
        wanted.iter().filter(|c| !**c).count(),
        wanted.len()
    );
    assert!(e <= 1e-4, "{name}: final latents {e}");
}

#[test]
fn fbcache_on_the_trace_dit_decides_as_diffusers() {
    let f = load(TRACES);
    let folder = fixtures().join("cache_traces/trace_dit");
    let loaded = load_model(&folder.display().to_string(), "f32", "cpu").expect("model");
    let mut reused_somewhere = false;
    for r in runs().iter().filter(|r| r["model"] == "trace_dit") {
        let settings = SampleSettings {
            class_labels: vec![r["run"]["class_label"].as_u64().expect("class") as u32],
            prompt: None,
            seed: 0,
            steps: r["run"]["steps"].as_u64().expect("steps") as usize,
            guidance: r["run"]["guidance"].as_f64().expect("guidance"),
            cfg_mode: CfgMode::Batched,
            scheduler: SchedulerKind::DpmSolverMultistep,
            scheduler_config: SchedulerConfig::default(),
            size: None,
        };
        let threshold = r["threshold"].as_f64().expect("threshold");
        let (latents, calls) = run(&loaded.model, &settings, &f["dit_noise"], threshold);
        reused_somewhere |= calls.iter().any(|c| !c.0);
        let key = r["latents"].as_str().expect("key");
        check(
            &format!("DiT thr {threshold}"),
            r,
            &calls,
            &latents,
            &f[key],
        );
    }
    assert!(reused_somewhere, "the traces reuse somewhere");
}

#[test]
fn fbcache_on_flux_decides_as_diffusers_with_both_streams() {
    let f = load(TRACES);
    let folder = fixtures().join("flux_pipeline");
    let loaded = load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline");
    let text = loaded.text.as_ref().expect("text encoders");
    for r in runs().iter().filter(|r| r["model"] == "flux_pipeline") {
        let prompt = r["prompt"].as_str().expect("prompt").to_string();
        let settings = SampleSettings {
            class_labels: vec![],
            prompt: Some(PromptSettings {
                embeds: text.encode(&prompt, 16).expect("encodes"),
                prompt,
                negative: String::new(),
                true_cfg: 1.0,
                negative_embeds: None,
            }),
            seed: 0,
            steps: 12,
            guidance: 3.5,
            cfg_mode: CfgMode::Separate,
            scheduler: SchedulerKind::FlowMatchEuler,
            scheduler_config: loaded.scheduler_config.clone(),
            size: Some((8, 8)),
        };
        let threshold = r["threshold"].as_f64().expect("threshold");
        let (latents, calls) = run(&loaded.model, &settings, &f["flux_noise"], threshold);
        let key = r["latents"].as_str().expect("key");
        let want = unpack(&f[key], 8, 8).expect("unpack");
        check(&format!("FLUX thr {threshold}"), r, &calls, &latents, &want);
    }
}

#[test]
fn fbcache_refuses_a_one_block_model_and_names_its_signature_by_the_threshold() {
    let config = fbcache(0.08);
    assert_eq!(config.signature(), "FBCache_R0.08");
    assert!(
        config.check_blocks(1).is_err(),
        "diffusers needs a head and a tail block"
    );
    assert!(config.check_blocks(2).is_ok());
}
