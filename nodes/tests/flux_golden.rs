//! FLUX.1 against diffusers and transformers (tools/make_flux_fixtures.py): a tiny seeded
//! `FluxPipeline` folder loads unchanged; its tokenizers, CLIP and T5 encoders, the
//! transformer's forward (every block), the flow-matching schedules, a whole pipeline run and
//! its RGB image, and cache-dit's DBCache run on it are matched. Errors are
//! `max|ours − ref| / max|ref|`; `--nocapture` prints them.

use cachedit_nodes::cache::hook::PlainForward;
use cachedit_nodes::cache::record::Decision;
use cachedit_nodes::cache::{CfgBranch, StepCache, StepCacheConfig, Strategy};
use cachedit_nodes::image::convert::to_unit_range;
use cachedit_nodes::models::blocks::{run_order, BlockTransformer, TextConditioning};
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::flux::{pack, unpack, Flux};
use cachedit_nodes::models::{AnyModel, LoadedModel};
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, PromptSettings, SampleSettings};
use cachedit_nodes::schedulers::flow_match::{FlowMatchEuler, FlowMatchOptions};
use cachedit_nodes::schedulers::{Scheduler, SchedulerConfig, SchedulerKind};
use candle_core::{DType, Tensor};
use serde_json::Value;
use std::collections::HashMap;

mod golden;
use golden::{fixtures, load, norm_err};

const GOLDEN: &str = "flux_golden.safetensors";

/// The fixture's JSON metadata.
fn metadata() -> HashMap<String, Value> {
    let bytes = std::fs::read(fixtures().join(GOLDEN)).expect("fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    meta.metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect()
}

fn pipeline() -> LoadedModel {
    let folder = fixtures().join("flux_pipeline");
    load_model(&folder.display().to_string(), "f32", "cpu").expect("the FluxPipeline folder loads")
}

fn flux(loaded: &LoadedModel) -> &Flux {
    match &loaded.model {
        AnyModel::Flux(m) => m,
        other => panic!("loaded as {}", other.family()),
    }
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<i64>())
        .expect("ids")
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn check(what: &str, ours: &Tensor, reference: &Tensor, tolerance: f32) {
    let e = norm_err(ours, reference);
    eprintln!("{what}: {e:.2e}");
    assert!(e <= tolerance, "{what}: {e} > {tolerance}");
}

fn prompts() -> Vec<String> {
    serde_json::from_value(metadata()["prompts"].clone()).expect("prompts")
}

#[test]
fn the_tokenizers_give_the_pipelines_ids_and_the_encoders_its_embeddings() {
    let f = load(GOLDEN);
    let loaded = pipeline();
    let text = loaded.text.as_ref().expect("the text encoders are loaded");
    for (i, prompt) in prompts().iter().enumerate() {
        let got = text.ids(prompt, 16).expect("tokenizes");
        assert_eq!(
            got.clip,
            ids(&f[&format!("clip_ids_{i}")]),
            "CLIP ids of {prompt:?}"
        );
        assert_eq!(
            got.t5,
            ids(&f[&format!("t5_ids_{i}")]),
            "T5 ids of {prompt:?}"
        );
        let embeds = text.encode(prompt, 16).expect("encodes");
        check(
            &format!("CLIP pooled {i}"),
            &embeds.pooled,
            &f[&format!("clip_pooled_{i}")],
            1e-4,
        );
        check(
            &format!("T5 tokens {i}"),
            &embeds.tokens,
            &f[&format!("t5_hidden_{i}")],
            1e-4,
        );
    }
    // The second ask is the memo's.
    let a = text.encode(&prompts()[0], 16).expect("encodes");
    let b = text.encode(&prompts()[0], 16).expect("encodes");
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "an unchanged prompt is not encoded again"
    );
}

fn forward_text(f: &HashMap<String, Tensor>, guidance: bool) -> TextConditioning {
    TextConditioning {
        tokens: f["fwd_encoder"].clone(),
        pooled: f["fwd_pooled"].clone(),
        guidance: guidance.then(|| f["fwd_guidance"].clone()),
    }
}

#[test]
fn the_transformer_matches_diffusers_block_by_block() {
    let f = load(GOLDEN);
    let loaded = pipeline();
    let model = flux(&loaded);
    assert_eq!(
        pack(&f["fwd_latent"]).expect("pack").dims(),
        f["fwd_hidden"].dims()
    );
    check(
        "pack",
        &pack(&f["fwd_latent"]).expect("pack"),
        &f["fwd_hidden"],
        0.0,
    );
    check(
        "unpack",
        &unpack(&f["fwd_hidden"], 8, 8).expect("unpack"),
        &f["fwd_latent"],
        0.0,
    );
    let text = forward_text(&f, true);
    let (mut streams, call) = model
        .embed_packed(&f["fwd_hidden"], &f["fwd_timestep"], &text, (4, 4))
        .expect("embed");
    check("x_embedder", &streams.hidden, &f["fwd_x_embed"], 1e-5);
    check(
        "context_embedder",
        streams.encoder.as_ref().expect("text stream"),
        &f["fwd_context"],
        1e-5,
    );
    check("time_text_embed", call.temb(), &f["fwd_temb"], 1e-5);
    check("RoPE cos", &call.rope().cos, &f["fwd_rope_cos"], 1e-6);
    check("RoPE sin", &call.rope().sin, &f["fwd_rope_sin"], 1e-6);
    for at in run_order(model.block_lists()) {
        streams = model.block(at, &streams, &call).expect("block");
        let name = if at.list == 0 { "double" } else { "single" };
        let key = |s: &str| format!("fwd_{name}_{}_{s}", at.index);
        check(&key("hidden"), &streams.hidden, &f[&key("hidden")], 1e-4);
        let encoder = streams.encoder.as_ref().expect("text stream");
        check(&key("encoder"), encoder, &f[&key("encoder")], 1e-4);
    }
    let out = model.head_packed(&streams, &call).expect("head");
    check("forward output", &out, &f["fwd_out"], 1e-4);
    let whole = model
        .forward_packed(&f["fwd_hidden"], &f["fwd_timestep"], &text, (4, 4))
        .expect("forward");
    check("forward_packed", &whole, &f["fwd_out"], 1e-4);
}

#[test]
fn schnell_has_no_guidance_embedding_and_matches_too() {
    let f = load(GOLDEN);
    let folder = fixtures().join("flux_schnell_transformer");
    let loaded = load_model(&folder.display().to_string(), "f32", "cpu").expect("loads");
    assert_eq!(loaded.model.family(), "FLUX.1-schnell");
    assert!(!loaded.model.embeds_guidance());
    assert!(
        loaded.text.is_none(),
        "a bare transformer folder has no text encoders"
    );
    let out = flux(&loaded)
        .forward_packed(
            &f["fwd_hidden"],
            &f["fwd_timestep"],
            &forward_text(&f, false),
            (4, 4),
        )
        .expect("forward");
    check("schnell forward", &out, &f["fwd_schnell_out"], 1e-4);
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_vec1::<f32>())
        .expect("vector")
}

#[test]
fn flow_match_schedules_are_the_pipelines_bit_for_bit() {
    let f = load(GOLDEN);
    let meta = metadata();
    let dev = FlowMatchOptions::from_config(&pipeline().scheduler_config).expect("dev config");
    let cases: Vec<(usize, usize)> =
        serde_json::from_value(meta["sched_cases"].clone()).expect("cases");
    assert!(!cases.is_empty());
    for (steps, tokens) in cases {
        let s = FlowMatchEuler::with_options(&dev, steps, tokens);
        let key = |k: &str| format!("sched_{steps}_{tokens}_{k}");
        let want_t = f32s(&f[&key("timesteps")]);
        let want_s = f32s(&f[&key("sigmas")]);
        let got_t: Vec<f32> = s.timesteps().iter().map(|&t| t as f32).collect();
        let got_s: Vec<f32> = s.sigmas().iter().map(|&t| t as f32).collect();
        assert_eq!(got_t, want_t, "timesteps, {steps} steps at {tokens} tokens");
        assert_eq!(got_s, want_s, "sigmas, {steps} steps at {tokens} tokens");
    }
    let schnell = FlowMatchOptions::from_config(&SchedulerConfig::flux_default(false)).expect("ok");
    let s = FlowMatchEuler::with_options(&schnell, 4, 16);
    let got: Vec<f32> = s.sigmas().iter().map(|&t| t as f32).collect();
    assert_eq!(got, f32s(&f["sched_schnell_4_sigmas"]), "schnell sigmas");
}

/// The pipeline fixture's run: its prompt, 6 steps, guidance 3.5, 16 T5 tokens, 16×16 px.
fn pipe_settings(loaded: &LoadedModel, steps: usize) -> SampleSettings {
    let meta = metadata();
    let prompt = meta["pipe_prompt"].as_str().expect("prompt").to_string();
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
        steps,
        guidance: 3.5,
        cfg_mode: CfgMode::Separate,
        scheduler: SchedulerKind::FlowMatchEuler,
        scheduler_config: loaded.scheduler_config.clone(),
        size: Some((8, 8)),
    }
}

#[test]
fn a_flux_pipeline_folder_samples_and_renders_as_the_pipeline() {
    let f = load(GOLDEN);
    let loaded = pipeline();
    let summary = loaded.summary();
    assert!(
        summary.contains("FLUX.1-dev")
            && summary.contains("2 × transformer_blocks + 2 × single_transformer_blocks")
            && summary.contains("VAE: 16 latent channels"),
        "{summary}"
    );
    let settings = pipe_settings(&loaded, 6);
    let mut steps = Vec::new();
    let out = denoise(
        &loaded.model,
        &settings,
        &f["pipe_noise"],
        &mut PlainForward::default(),
        &mut |p| {
            steps.push(p.timestep as f32);
            Flow::Continue
        },
    )
    .expect("sampling");
    assert_eq!(
        steps,
        f32s(&f["pipe_timesteps"]),
        "the pipeline's timesteps"
    );
    let want = unpack(&f["pipe_latents_final"], 8, 8).expect("unpack");
    check("final latents", &out.sample, &want, 1e-4);
    let vae = loaded.vae.clone().expect("VAE");
    let pixels = vae.decode(&out.sample, true).expect("decode");
    check("decoded", &pixels, &f["pipe_decoded"], 1e-4);
    let image = to_unit_range(&pixels)
        .and_then(|x| x.permute((0, 2, 3, 1)))
        .expect("image");
    check("RGB image", &image, &f["pipe_image"], 1e-4);
    let images = loaded.images(&out.sample).expect("images");
    assert_eq!((images[0].width, images[0].height), (16, 16));
}

/// cache-dit's DBCache run of the fixture (Fn 1, Bn 0, warmup 2, its threshold) as a config.
fn cache_dit_config() -> StepCacheConfig {
    let meta = metadata();
    let mut config = StepCacheConfig {
        strategy: Strategy::Adaptive,
        noise_scale: 0.0,
        ..StepCacheConfig::default()
    };
    let db = &mut config.db;
    db.fn_compute_blocks = 1;
    db.bn_compute_blocks = 0;
    db.residual_diff_threshold = meta["cd_threshold"].as_f64().expect("threshold");
    db.max_warmup_steps = 2;
    db.warmup_interval = 1;
    db.max_cached_steps = -1;
    db.max_continuous_cached_steps = -1;
    db.max_accumulated_residual_diff_threshold = None;
    config
}

#[test]
fn the_step_cache_on_flux_caches_the_steps_cache_dit_caches() {
    let f = load(GOLDEN);
    let meta = metadata();
    let loaded = pipeline();
    let settings = pipe_settings(&loaded, 12);
    let noise = unpack(&f["cd_latents_init"], 8, 8).expect("unpack");
    let mut cache = StepCache::for_run(
        std::sync::Arc::new(cache_dit_config()),
        loaded.model.block_lists(),
        12,
    )
    .expect("config");
    let mut cached = Vec::new();
    let out = denoise(&loaded.model, &settings, &noise, &mut cache, &mut |p| {
        for c in &p.calls {
            assert_eq!(c.branch, CfgBranch::Batched, "FLUX.1-dev runs no CFG");
            if c.decision == Decision::Reused {
                cached.push(p.index);
            }
        }
        Flow::Continue
    })
    .expect("cached sampling");
    let want: Vec<usize> = serde_json::from_value(meta["cd_cached_steps"].clone()).expect("list");
    assert_eq!(cached, want, "cached steps");
    let reference = unpack(&f["cd_cached_final"], 8, 8).expect("unpack");
    check("cached final latents", &out.sample, &reference, 1e-3);

    let plain = denoise(
        &loaded.model,
        &settings,
        &noise,
        &mut PlainForward::default(),
        &mut |_| Flow::Continue,
    )
    .expect("uncached sampling");
    let reference = unpack(&f["cd_uncached_final"], 8, 8).expect("unpack");
    check("uncached final latents", &plain.sample, &reference, 1e-4);
}

#[test]
fn a_flux_checkpoint_that_does_not_fit_its_config_names_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = fixtures().join("flux_pipeline/transformer");
    std::fs::copy(
        src.join("diffusion_pytorch_model.safetensors"),
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .expect("copy");
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let wrong = config.replace("\"joint_attention_dim\": 32", "\"joint_attention_dim\": 48");
    assert_ne!(wrong, config);
    std::fs::write(tmp.path().join("config.json"), wrong).expect("write");
    let err = load_model(&tmp.path().display().to_string(), "f32", "cpu")
        .expect_err("48-wide text tokens do not fit 32-wide weights")
        .to_string();
    assert!(
        err.contains("diffusion_pytorch_model.safetensors")
            && err.contains("context_embedder.weight")
            && err.contains("[16, 48]")
            && err.contains("[16, 32]"),
        "names the file, the tensor and both shapes: {err}"
    );
}

#[test]
fn a_text_model_without_a_prompt_or_with_a_class_is_an_error_naming_the_field() {
    let loaded = pipeline();
    let mut settings = pipe_settings(&loaded, 2);
    settings.prompt = None;
    settings.class_labels = vec![3];
    let noise = Tensor::zeros((1, 16, 8, 8), DType::F32, &candle_core::Device::Cpu).expect("0");
    let err = denoise(
        &loaded.model,
        &settings,
        &noise,
        &mut PlainForward::default(),
        &mut |_| Flow::Continue,
    )
    .expect_err("no prompt")
    .to_string();
    assert!(
        err.contains("prompt") && err.contains("text-conditioned"),
        "{err}"
    );
}

#[test]
fn half_precision_loads_and_runs_close_to_f32() {
    let f = load(GOLDEN);
    let folder = fixtures().join("flux_pipeline");
    // The model scales t/1000 and the guidance by 1000 in its own dtype, as diffusers does, so
    // in half precision 0.73 → 730 and 3.5 → 3500 move (bf16: 732, 3504) and with them every
    // embedding. t = 0.5 and guidance 4 stay exact (500, 4000): the comparison sees the
    // arithmetic, not the inputs' rounding.
    let cpu = candle_core::Device::Cpu;
    let t = Tensor::new(&[0.5f32], &cpu).expect("t");
    let text = TextConditioning {
        guidance: Some(Tensor::new(&[4.0f32], &cpu).expect("g")),
        ..forward_text(&f, true)
    };
    let f32_model = pipeline();
    let reference = flux(&f32_model)
        .forward_packed(&f["fwd_hidden"], &t, &text, (4, 4))
        .expect("f32 forward");
    for dtype in ["bf16", "f16"] {
        let loaded = load_model(&folder.display().to_string(), dtype, "cpu").expect("loads");
        let out = flux(&loaded)
            .forward_packed(&f["fwd_hidden"], &t, &text, (4, 4))
            .expect("forward");
        check(&format!("{dtype} forward"), &out, &reference, 3e-2);
        let embeds = loaded
            .text
            .as_ref()
            .expect("text")
            .encode("a red fox in the snow", 16)
            .expect("encodes");
        check(
            &format!("{dtype} CLIP pooled"),
            &embeds.pooled,
            &f["clip_pooled_0"],
            3e-2,
        );
        check(
            &format!("{dtype} T5 tokens"),
            &embeds.tokens,
            &f["t5_hidden_0"],
            3e-2,
        );
    }
}
