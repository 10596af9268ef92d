//! Parity with diffusers' MagCache (`MagCacheConfig`, diffusers 0.42.1), from traces of the
//! real hook (tools/make_magcache_traces.py): calibration records diffusers' ratios (1e-4), and
//! with them (and, for FLUX.1, diffusers' published `FLUX_MAG_RATIOS`) at several thresholds,
//! `max_skip_steps` and `retention_ratio` values, on the 12-block trace DiT and on the FLUX.1
//! fixture, every call's decision is identical and the final latents within 1e-4.

use cachedit_nodes::cache::config::MagCacheParams;
use cachedit_nodes::cache::{hook_for_run, Decision, StepCacheConfig};
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::models::{AnyModel, LoadedModel};
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, PromptSettings, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::Tensor;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

mod golden;
use golden::{fixtures, load, norm_err};

const TRACES: &str = "magcache_traces.safetensors";

fn metadata() -> HashMap<String, Value> {
    let bytes = std::fs::read(fixtures().join(TRACES)).expect("fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    meta.metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect()
}

fn dit() -> LoadedModel {
    let folder = fixtures().join("cache_traces/trace_dit");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("model")
}

fn dit_settings() -> SampleSettings {
    SampleSettings {
        class_labels: vec![3],
        prompt: None,
        seed: 0,
        steps: 25,
        guidance: 4.0,
        cfg_mode: CfgMode::Batched,
        scheduler: SchedulerKind::DpmSolverMultistep,
        scheduler_config: SchedulerConfig::default(),
        size: None,
    }
}

fn flux() -> LoadedModel {
    let folder = fixtures().join("flux_pipeline");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline")
}

fn flux_settings(loaded: &LoadedModel, prompt: &str) -> SampleSettings {
    let text = loaded.text.as_ref().expect("text encoders");
    SampleSettings {
        class_labels: vec![],
        prompt: Some(PromptSettings {
            embeds: text.encode(prompt, 16).expect("encodes"),
            prompt: prompt.to_string(),
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
    }
}

/// The run's final sample and, per call, (computed, recorded diff).
fn run(
    model: &AnyModel,
    settings: &SampleSettings,
    noise: &Tensor,
    config: StepCacheConfig,
) -> (Tensor, Vec<(bool, Option<f64>)>) {
    let mut hook = hook_for_run::<AnyModel>(Arc::new(config), model.block_lists(), settings.steps)
        .expect("config");
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

fn config_of(r: &Value, ratios: Option<Vec<f64>>) -> StepCacheConfig {
    StepCacheConfig::mag_cache(
        r["threshold"].as_f64().expect("threshold"),
        MagCacheParams {
            max_skip_steps: r["max_skip_steps"].as_u64().expect("k") as usize,
            retention_ratio: r["retention_ratio"].as_f64().expect("retention"),
            mag_ratios: ratios,
            calibrate: false,
        },
    )
}

fn calibration(model: &AnyModel, settings: &SampleSettings, noise: &Tensor) -> Vec<f64> {
    let config = StepCacheConfig::mag_cache(
        0.06,
        MagCacheParams {
            calibrate: true,
            ..MagCacheParams::default()
        },
    );
    let (_, calls) = run(model, settings, noise, config);
    assert!(calls.iter().all(|c| c.0), "calibration computes every step");
    calls
        .iter()
        .map(|c| c.1.expect("a ratio per call"))
        .collect()
}

fn check_ratios(name: &str, ours: &[f64], want: &Value) {
    let want: Vec<f64> = serde_json::from_value(want.clone()).expect("ratios");
    assert_eq!(ours.len(), want.len(), "{name}");
    for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "{name} step {i}: {a} vs {b}"
        );
    }
}

fn check_run(
    name: &str,
    r: &Value,
    calls: &[(bool, Option<f64>)],
    latents: &Tensor,
    want: &Tensor,
) {
    let wanted: Vec<bool> = serde_json::from_value(r["computed"].clone()).expect("computed");
    let ours: Vec<bool> = calls.iter().map(|c| c.0).collect();
    assert_eq!(ours, wanted, "{name}: decisions (true = computed)");
    let e = norm_err(latents, want);
    eprintln!(
        "{name}: skipped {} of {}, latents {e:.2e}",
        wanted.iter().filter(|c| !**c).count(),
        wanted.len()
    );
    assert!(e <= 1e-4, "{name}: final latents {e}");
}

#[test]
fn magcache_calibrates_and_skips_as_diffusers_on_the_trace_dit() {
    let f = load(TRACES);
    let meta = metadata();
    let loaded = dit();
    let s = dit_settings();
    let ratios = calibration(&loaded.model, &s, &f["dit_noise"]);
    check_ratios("DiT calibration", &ratios, &meta["dit_calibration"]);
    let runs: Vec<Value> = serde_json::from_value(meta["runs"].clone()).expect("runs");
    for r in runs.iter().filter(|r| r["model"] == "trace_dit") {
        let given: Vec<f64> = serde_json::from_value(r["ratios"].clone()).expect("ratios");
        let (latents, calls) = run(
            &loaded.model,
            &s,
            &f["dit_noise"],
            config_of(r, Some(given)),
        );
        let key = r["latents"].as_str().expect("key");
        check_run(key, r, &calls, &latents, &f[key]);
    }
}

#[test]
fn magcache_on_flux_with_calibrated_and_published_ratios() {
    let f = load(TRACES);
    let meta = metadata();
    let loaded = flux();
    let runs: Vec<Value> = serde_json::from_value(meta["runs"].clone()).expect("runs");
    let prompt = runs
        .iter()
        .find_map(|r| r["prompt"].as_str())
        .expect("a FLUX run");
    let s = flux_settings(&loaded, prompt);
    let ratios = calibration(&loaded.model, &s, &f["flux_noise"]);
    check_ratios("FLUX calibration", &ratios, &meta["flux_calibration"]);
    for r in runs.iter().filter(|r| r["model"] == "flux_pipeline") {
        // The published set is the model's own: no ratios given.
        let given = match r["ratios_name"].as_str() {
            Some("published") => None,
            _ => Some(serde_json::from_value(r["ratios"].clone()).expect("ratios")),
        };
        let (latents, calls) = run(&loaded.model, &s, &f["flux_noise"], config_of(r, given));
        let key = r["latents"].as_str().expect("key");
        let want = unpack(&f[key], 8, 8).expect("unpack");
        check_run(key, r, &calls, &latents, &want);
    }
}

#[test]
fn magcache_without_ratios_on_a_model_that_has_none_says_to_calibrate() {
    let f = load(TRACES);
    let loaded = dit();
    let config = StepCacheConfig::mag_cache(0.06, MagCacheParams::default());
    let mut hook =
        hook_for_run::<AnyModel>(Arc::new(config), loaded.model.block_lists(), 25).expect("ok");
    let err = denoise(
        &loaded.model,
        &dit_settings(),
        &f["dit_noise"],
        hook.as_mut(),
        &mut |_| Flow::Continue,
    )
    .expect_err("no ratios")
    .to_string();
    assert!(err.contains("calibrate"), "{err}");
    assert_eq!(
        StepCacheConfig::mag_cache(0.06, MagCacheParams::default()).signature(),
        "MagCache_R0.06K3RR0.2"
    );
}
