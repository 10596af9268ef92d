//! What the parity tests of the caching methods share: the fixture's run list, the two models
//! the trace scripts run (the 12-block trace DiT, the tiny FLUX.1 pipeline) with their sampler
//! settings, and one sampler run through a method's hook with every call's record.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use cachedit_nodes::cache::{hook_for_run, CallRecord, StepCacheConfig};
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::{AnyModel, LoadedModel};
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, PromptSettings, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::Tensor;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture's tensors.
pub fn tensors(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &candle_core::Device::Cpu)
        .expect("fixture loads")
}

/// The fixture's metadata, each value parsed as JSON where it is JSON.
pub fn metadata(file: &str) -> HashMap<String, Value> {
    let bytes = std::fs::read(fixtures().join(file)).expect("fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    meta.metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect()
}

/// The fixture's `runs` list.
pub fn runs(file: &str) -> Vec<Value> {
    serde_json::from_value(metadata(file)["runs"].clone()).expect("runs")
}

/// The trace DiT of tools/make_cache_traces.py.
pub fn trace_dit() -> LoadedModel {
    let folder = fixtures().join("cache_traces/trace_dit");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("model")
}

/// The trace scripts' DiT run (`BASE_RUN`): class 3, 25 DPM-Solver++ steps, guidance 4.
pub fn dit_settings(cfg_mode: CfgMode) -> SampleSettings {
    SampleSettings {
        class_labels: vec![3],
        prompt: None,
        seed: 0,
        steps: 25,
        guidance: 4.0,
        cfg_mode,
        scheduler: SchedulerKind::DpmSolverMultistep,
        scheduler_config: SchedulerConfig::default(),
        size: None,
    }
}

/// The tiny FluxPipeline of tools/make_flux_fixtures.py.
pub fn flux_pipeline() -> LoadedModel {
    let folder = fixtures().join("flux_pipeline");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline")
}

/// The trace scripts' FLUX run: 12 steps, guidance 3.5, 16×16 px, 16 T5 tokens; true CFG with
/// an empty negative prompt when `true_cfg` > 1.
pub fn flux_settings(loaded: &LoadedModel, prompt: &str, true_cfg: f64) -> SampleSettings {
    let text = loaded.text.as_ref().expect("text encoders");
    SampleSettings {
        class_labels: vec![],
        prompt: Some(PromptSettings {
            embeds: text.encode(prompt, 16).expect("encodes"),
            prompt: prompt.to_string(),
            negative: String::new(),
            true_cfg,
            negative_embeds: (true_cfg > 1.0).then(|| text.encode("", 16).expect("encodes")),
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

/// One sampler run from `noise` with the hook `config` asks for: the final sample and every
/// call's record.
pub fn run(
    model: &AnyModel,
    settings: &SampleSettings,
    noise: &Tensor,
    config: StepCacheConfig,
) -> (Tensor, Vec<CallRecord>) {
    let mut hook = hook_for_run::<AnyModel>(Arc::new(config), model.block_lists(), settings.steps)
        .expect("config");
    let mut calls = Vec::new();
    let out = denoise(model, settings, noise, hook.as_mut(), &mut |p| {
        calls.extend(p.calls.iter().cloned());
        Flow::Continue
    })
    .expect("sampling");
    (out.sample, calls)
}

/// A JSON `[low, high]` as a window.
pub fn window(v: &Value) -> (f64, f64) {
    let pair: Vec<f64> = serde_json::from_value(v.clone()).expect("window");
    (pair[0], pair[1])
}
