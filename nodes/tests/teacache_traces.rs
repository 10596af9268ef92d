//! TeaCache on FLUX.1 against its published rule run around diffusers' own modules
//! (tools/make_teacache_traces.py; TeaCache ships as model-patching scripts, not a library, so
//! the script states the rule itself): the model's probe gives diffusers' block-0 `norm1`
//! output on every step (1e-5), and at five thresholds every call's decision is identical,
//! every accumulated distance within 1e-5 relative and the final latents within 1e-4.
//! `--nocapture` prints the errors.

use cachedit_nodes::cache::hook::{CallInfo, TransformerHook};
use cachedit_nodes::cache::record::CallRecord;
use cachedit_nodes::cache::{hook_for_run, Decision, StepCacheConfig};
use cachedit_nodes::models::blocks::{forward, BlockTransformer, Conditioning};
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::flux::unpack;
use cachedit_nodes::models::{AnyModel, LoadedModel};
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, PromptSettings, SampleSettings};
use cachedit_nodes::schedulers::SchedulerKind;
use candle_core::Tensor;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

mod golden;
use golden::{fixtures, load, norm_err};

const TRACES: &str = "teacache_traces.safetensors";

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

fn settings(loaded: &LoadedModel) -> SampleSettings {
    let meta = metadata();
    let prompt = meta["prompt"].as_str().expect("prompt").to_string();
    let text = loaded.text.as_ref().expect("text encoders");
    SampleSettings {
        class_labels: vec![],
        prompt: Some(PromptSettings {
            embeds: text.encode(&prompt, 16).expect("encodes"),
            prompt,
            negative: String::new(),
            true_cfg: 1.0,
            negative_embeds: None,
        }),
        seed: 0,
        steps: meta["steps"].as_u64().expect("steps") as usize,
        guidance: 3.5,
        cfg_mode: CfgMode::Separate,
        scheduler: SchedulerKind::FlowMatchEuler,
        scheduler_config: loaded.scheduler_config.clone(),
        size: Some((8, 8)),
    }
}

fn pipeline() -> LoadedModel {
    let folder = fixtures().join("flux_pipeline");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("pipeline")
}

/// The plain forward that also keeps the model's modulated input of every call.
#[derive(Default)]
struct Probe {
    modulated: Vec<Tensor>,
}

impl TransformerHook<AnyModel> for Probe {
    fn reset(&mut self) {
        self.modulated.clear();
    }

    fn call(
        &mut self,
        model: &AnyModel,
        _info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> candle_core::Result<Tensor> {
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let m = model
            .modulated_input(&streams, &call)?
            .expect("FLUX exposes it");
        self.modulated.push(m);
        forward(model, x, timesteps, cond)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        Vec::new()
    }

    fn peak_bytes(&self) -> usize {
        0
    }
}

#[test]
fn the_flux_probe_is_diffusers_block_0_norm1_on_every_step() {
    let f = load(TRACES);
    let loaded = pipeline();
    let s = settings(&loaded);
    let mut probe = Probe::default();
    denoise(&loaded.model, &s, &f["noise"], &mut probe, &mut |_| {
        Flow::Continue
    })
    .expect("runs");
    assert_eq!(probe.modulated.len(), s.steps);
    for (i, m) in probe.modulated.iter().enumerate() {
        let e = norm_err(m, &f[&format!("modulated_{i}")]);
        assert!(e <= 1e-5, "step {i}: modulated input {e}");
    }
}

#[test]
fn teacache_on_flux_decides_as_the_published_rule() {
    let f = load(TRACES);
    let loaded = pipeline();
    let s = settings(&loaded);
    let runs: Vec<Value> = serde_json::from_value(metadata()["runs"].clone()).expect("runs");
    let mut reused_somewhere = false;
    for r in &runs {
        let threshold = r["threshold"].as_f64().expect("threshold");
        let mut hook = hook_for_run::<AnyModel>(
            Arc::new(StepCacheConfig::tea_cache(threshold)),
            loaded.model.block_lists(),
            s.steps,
        )
        .expect("config");
        let mut calls: Vec<(bool, Option<f64>)> = Vec::new();
        let out = denoise(&loaded.model, &s, &f["noise"], hook.as_mut(), &mut |p| {
            calls.extend(
                p.calls
                    .iter()
                    .map(|c| (c.decision == Decision::Computed, c.diff)),
            );
            Flow::Continue
        })
        .expect("sampling");
        let want: Vec<(bool, Option<f64>)> =
            serde_json::from_value(r["calls"].clone()).expect("calls");
        let ours: Vec<bool> = calls.iter().map(|c| c.0).collect();
        let theirs: Vec<bool> = want.iter().map(|c| c.0).collect();
        assert_eq!(
            ours, theirs,
            "threshold {threshold}: decisions (true = computed)"
        );
        reused_somewhere |= ours.iter().any(|c| !c);
        for (i, (a, b)) in calls.iter().zip(&want).enumerate() {
            match (a.1, b.1) {
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1e-6),
                    "threshold {threshold}, call {i}: accumulated {a} vs {b}"
                ),
                (None, None) => {}
                other => panic!("threshold {threshold}, call {i}: {other:?}"),
            }
        }
        let key = r["latents"].as_str().expect("key");
        let e = norm_err(&out.sample, &unpack(&f[key], 8, 8).expect("unpack"));
        eprintln!(
            "TeaCache {threshold}: reused {} of {}, latents {e:.2e}",
            theirs.iter().filter(|c| !**c).count(),
            theirs.len()
        );
        assert!(e <= 1e-4, "threshold {threshold}: final latents {e}");
    }
    assert!(reused_somewhere, "the traces reuse somewhere");
}

#[test]
fn teacache_names_its_signature_by_the_threshold() {
    assert_eq!(StepCacheConfig::tea_cache(0.6).signature(), "TeaCache_R0.6");
}
