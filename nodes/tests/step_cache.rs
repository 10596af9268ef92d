//! The step cache on a real DiT (the built-in `random-tiny`): bypass is bit-exact, separate CFG
//! matches batched, CFG branches are isolated, state resets between runs, a measured diff
//! below the threshold reuses, TaylorSeer changes what a reuse adds.

use cachedit_nodes::cache::hook::{CallInfo, PlainForward, TransformerHook};
use cachedit_nodes::cache::{
    CallRecord, CfgBranch, Decision, Reason, StepCache, StepCacheConfig, Strategy, TaylorIndexing,
    TaylorSeerConfig,
};
use cachedit_nodes::models::blocks::Conditioning;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::dit::DiT;
use cachedit_nodes::rng::Rng;
use cachedit_nodes::sampling::denoise::{denoise, initial_noise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::{Device, Tensor};
use std::sync::Arc;

fn model() -> DiT {
    load_model("random-tiny", "f32", "cpu")
        .expect("built-in model")
        .model
        .as_dit()
        .cloned()
        .expect("a DiT")
}

fn settings(steps: usize, cfg_mode: CfgMode, seed: u64) -> SampleSettings {
    SampleSettings {
        class_labels: vec![3],
        prompt: None,
        seed,
        steps,
        guidance: 4.0,
        cfg_mode,
        scheduler: SchedulerKind::DpmSolverMultistep,
        scheduler_config: SchedulerConfig::default(),
        size: None,
    }
}

/// Samples and returns the final sample's values and every call record.
fn sample(
    dit: &DiT,
    hook: &mut dyn TransformerHook<DiT>,
    s: &SampleSettings,
) -> (Vec<f32>, Vec<CallRecord>) {
    let noise = initial_noise(dit, s, &Device::Cpu).expect("noise");
    let mut calls = Vec::new();
    let out = denoise(dit, s, &noise, hook, &mut |p| {
        calls.extend(p.calls.iter().cloned());
        Flow::Continue
    })
    .expect("sampling");
    (values(&out.sample), calls)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}

fn cached(config: StepCacheConfig) -> StepCache {
    StepCache::new(Arc::new(config))
}

/// Records without their timings, for comparing two runs.
fn decisions(
    calls: &[CallRecord],
) -> Vec<(usize, CfgBranch, Decision, Reason, Option<f64>, usize)> {
    calls
        .iter()
        .map(|c| (c.step, c.branch, c.decision, c.reason, c.diff, c.blocks_run))
        .collect()
}

#[test]
fn configs_that_never_reuse_are_bit_identical_to_the_plain_forward() {
    let dit = model();
    let studio = StepCacheConfig::studio_default;
    let never: Vec<(&str, StepCacheConfig)> = vec![
        ("threshold 0", {
            let mut c = studio();
            c.db.residual_diff_threshold = 0.0;
            c
        }),
        ("max_cached 0", {
            let mut c = studio();
            c.db.max_cached_steps = 0;
            c
        }),
        ("max_continuous 0", {
            let mut c = studio();
            c.db.max_continuous_cached_steps = 0;
            c
        }),
        ("fixed, warmup ≥ steps", {
            let mut c = studio();
            c.strategy = Strategy::Fixed;
            c.db.max_warmup_steps = 8;
            c
        }),
        ("dynamic, no run allowed", {
            let mut c = studio();
            c.strategy = Strategy::Dynamic;
            c.db.max_continuous_cached_steps = 0;
            c
        }),
        ("empty middle (F4B2 of 6), always similar", {
            let mut c = studio();
            c.db.bn_compute_blocks = 2;
            c.db.residual_diff_threshold = 1.0;
            c
        }),
    ];
    for cfg_mode in [CfgMode::Batched, CfgMode::Separate] {
        let s = settings(8, cfg_mode, 5);
        let (plain, _) = sample(&dit, &mut PlainForward::default(), &s);
        for (name, config) in &never {
            let (out, calls) = sample(&dit, &mut cached(config.clone()), &s);
            assert!(out == plain, "{name} ({cfg_mode:?}): not bit-identical");
            let every_block = calls.iter().all(|c| c.blocks_run == c.blocks_total);
            assert!(every_block, "{name}: every block ran");
        }
    }
}

#[test]
fn separate_cfg_gives_the_batched_image_uncached() {
    let dit = model();
    let (batched, b_calls) = sample(
        &dit,
        &mut PlainForward::default(),
        &settings(10, CfgMode::Batched, 7),
    );
    let (separate, s_calls) = sample(
        &dit,
        &mut PlainForward::default(),
        &settings(10, CfgMode::Separate, 7),
    );
    assert_eq!((b_calls.len(), s_calls.len()), (10, 20));
    let scale = batched.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = batched
        .iter()
        .zip(&separate)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale, "max error {err} (scale {scale})");
    let branches: Vec<CfgBranch> = s_calls.iter().take(2).map(|c| c.branch).collect();
    assert_eq!(branches, [CfgBranch::Cond, CfgBranch::Uncond]);
}

/// Feeds the same per-step inputs to a hook, for the given branches, and returns the outputs
/// per branch.
fn drive(
    dit: &DiT,
    hook: &mut StepCache,
    branches: &[CfgBranch],
    steps: usize,
) -> Vec<Vec<Vec<f32>>> {
    let mut rng = Rng::new(99);
    let shape = (1, 3, 32, 32);
    let inputs: Vec<(Tensor, Tensor)> = (0..steps)
        .map(|_| {
            let cond = rng.randn(shape, &Device::Cpu).expect("x");
            let uncond = rng.randn(shape, &Device::Cpu).expect("x");
            (cond, uncond)
        })
        .collect();
    hook.reset();
    let mut out = vec![Vec::new(); branches.len()];
    for (step, (x_cond, x_uncond)) in inputs.iter().enumerate() {
        let t = Tensor::new(&[(1000 - 40 * step) as f32], &Device::Cpu).expect("t");
        for (i, &branch) in branches.iter().enumerate() {
            let (x, label) = match branch {
                CfgBranch::Uncond => (x_uncond, 10u32),
                _ => (x_cond, 3u32),
            };
            let labels = Tensor::new(&[label], &Device::Cpu).expect("labels");
            let info = CallInfo {
                step_index: step,
                total_steps: steps,
                timestep: t.to_vec1::<f32>().expect("t")[0] as f64,
                batched_cfg: false,
                branch,
                shares: Default::default(),
            };
            let y = hook
                .call(dit, &info, x, &t, &Conditioning::Class(labels))
                .expect("call");
            out[i].push(values(&y));
        }
    }
    out
}

#[test]
fn cfg_branches_keep_their_own_state() {
    let dit = model();
    let mut always = StepCacheConfig::studio_default();
    always.db.max_warmup_steps = 2;
    always.db.residual_diff_threshold = 1.0; // every call may reuse: limits and buffers decide
    always.taylorseer = Some(TaylorSeerConfig {
        order: 2,
        indexing: TaylorIndexing::Intended,
    });
    let mut fixed = StepCacheConfig::studio_default();
    fixed.strategy = Strategy::Fixed;
    fixed.db.fn_compute_blocks = 1;
    fixed.db.max_warmup_steps = 1;
    for config in [always, fixed] {
        let mut both = cached(config.clone());
        let together = drive(&dit, &mut both, &[CfgBranch::Cond, CfgBranch::Uncond], 9);
        let records = both.drain_records();
        assert!(records.iter().any(|r| r.decision == Decision::Reused));
        let alone_cond = drive(&dit, &mut cached(config.clone()), &[CfgBranch::Cond], 9);
        let alone_uncond = drive(&dit, &mut cached(config.clone()), &[CfgBranch::Uncond], 9);
        assert!(
            together[0] == alone_cond[0],
            "{}: cond unaffected by uncond",
            config.signature()
        );
        assert!(
            together[1] == alone_uncond[0],
            "{}: uncond unaffected by cond",
            config.signature()
        );
    }
}

#[test]
fn state_resets_at_the_start_of_every_run() {
    let dit = model();
    let mut config = StepCacheConfig::studio_default();
    config.strategy = Strategy::Dynamic;
    config.db.max_warmup_steps = 2;
    config.taylorseer = Some(TaylorSeerConfig {
        order: 1,
        indexing: TaylorIndexing::CacheDit,
    });
    let mut hook = cached(config.clone());
    let (first, first_calls) = sample(&dit, &mut hook, &settings(10, CfgMode::Separate, 1));
    let (other, _) = sample(&dit, &mut hook, &settings(10, CfgMode::Separate, 2));
    let (again, again_calls) = sample(&dit, &mut hook, &settings(10, CfgMode::Separate, 1));
    assert!(first != other);
    assert!(first == again, "a reused hook gives the same image");
    assert_eq!(decisions(&first_calls), decisions(&again_calls));
    let (fresh, _) = sample(
        &dit,
        &mut cached(config),
        &settings(10, CfgMode::Separate, 1),
    );
    assert!(first == fresh, "a fresh hook gives the same image");
}

#[test]
fn a_measured_diff_below_the_threshold_reuses_and_taylorseer_forecasts() {
    let dit = model();
    let s = settings(12, CfgMode::Batched, 11);
    let mut probe = StepCacheConfig::studio_default();
    probe.db.max_warmup_steps = 4;
    probe.db.residual_diff_threshold = 0.01;
    let (_, calls) = sample(&dit, &mut cached(probe.clone()), &s);
    // No hit at 0.01, so every step computed; take the smallest diff at step ≥ 4.
    let (step, diff) = calls
        .iter()
        .filter_map(|c| c.diff.map(|d| (c.step, d)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("diffs measured");
    assert!(calls.iter().all(|c| c.decision == Decision::Computed));
    assert!(diff < 0.999, "diff {diff}");
    // Same run, warmup up to that step and the threshold just above its diff: identical until
    // then, so that step must reuse.
    let mut hit = probe.clone();
    hit.db.max_warmup_steps = step;
    hit.db.residual_diff_threshold = diff + 1e-6;
    let (plain_reuse, calls) = sample(&dit, &mut cached(hit.clone()), &s);
    let at = calls.iter().find(|c| c.step == step).expect("record");
    assert_eq!(
        (at.decision, at.reason),
        (Decision::Reused, Reason::DiffBelow)
    );
    assert_eq!(at.diff, Some(diff), "the same diff, measured again");
    assert_eq!(at.threshold, Some(diff + 1e-6));
    assert_eq!(at.blocks_run, 4, "F4B0 of 6 blocks");
    let mut ts = hit;
    ts.taylorseer = Some(TaylorSeerConfig {
        order: 1,
        indexing: TaylorIndexing::CacheDit,
    });
    let (forecast, ts_calls) = sample(&dit, &mut cached(ts), &s);
    let ts_at = ts_calls.iter().find(|c| c.step == step).expect("record");
    assert_eq!(ts_at.decision, Decision::Reused);
    // Warmup 4 means the last update was at step ≥ 3: a derivative exists (cache-dit indexing).
    assert!(step >= 4);
    assert!(
        forecast != plain_reuse,
        "an extrapolated residual, not the stale one"
    );
}

#[test]
fn default_noise_does_not_change_the_image_measurably() {
    use cachedit_nodes::image::convert::image_from_tensor;
    use cachedit_nodes::metrics::psnr;
    let dit = model();
    let s = settings(25, CfgMode::Batched, 42);
    let image = |hook: &mut dyn TransformerHook<DiT>| {
        let noise = initial_noise(&dit, &s, &Device::Cpu).expect("noise");
        let out = denoise(&dit, &s, &noise, hook, &mut |_| Flow::Continue).expect("sampling");
        image_from_tensor(&out.sample).expect("image").remove(0)
    };
    let mut config = StepCacheConfig::studio_default();
    config.strategy = Strategy::Fixed;
    assert!(config.noise_scale > 0.0, "the default adds noise");
    let noisy = image(&mut cached(config.clone()));
    config.noise_scale = 0.0;
    let exact = image(&mut cached(config.clone()));
    let plain = image(&mut PlainForward::default());
    // ≥ 70 dB on 8-bit RGB: a few channel values one level apart at most.
    let between = psnr(&exact, &noisy).expect("psnr");
    assert!(
        between >= 70.0,
        "default noise vs exact reuse: {between:.2} dB"
    );
    let (with, without) = (
        psnr(&plain, &noisy).expect("psnr"),
        psnr(&plain, &exact).expect("psnr"),
    );
    assert!(
        (with - without).abs() < 0.1,
        "vs uncached: {with:.2} vs {without:.2} dB"
    );
    config.noise_scale = 0.03;
    let loud = image(&mut cached(config));
    assert!(
        psnr(&exact, &loud).expect("psnr") < between,
        "more noise, more change"
    );
}
