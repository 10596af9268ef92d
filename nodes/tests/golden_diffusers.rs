//! Golden tests: the DiT forward, the schedulers and whole sampling runs against fixtures made
//! by diffusers (tools/make_fixtures.py). Errors are "normalised max error":
//! `max|ours − ref| / max|ref|`, so elements near zero do not blow the ratio up.

use cachedit_nodes::cache::hook::PlainForward;
use cachedit_nodes::models::dit::DiT;
use cachedit_nodes::models::loading::load_dit;
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::schedulers::Scheduler;
use cachedit_nodes::schedulers::{ddim, dpm_solver, euler, table, SchedulerConfig, SchedulerKind};
use candle_core::{DType, Device, Tensor};

mod golden;
use golden::{fixtures, load, max_abs, norm_err};

fn model(dir: &str) -> DiT {
    load_dit(&fixtures().join(dir), DType::F32, &Device::Cpu).expect("checkpoint loads")
}

fn labels_u32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).expect("labels")
}

fn check_forward(model_dir: &str, fixture: &str) {
    let dit = model(model_dir);
    let f = load(fixture);
    let (x, t, y) = (&f["x"], &f["timestep"], labels_u32(&f["class_labels"]));
    let mut state = dit.embed(x, t, &y).expect("embed");
    let e = norm_err(&state.hidden, &f["embed"]);
    assert!(e <= 1e-5, "{fixture}: embed error {e}");
    for i in 0..dit.num_blocks() {
        let hidden = dit.block(i, &state).expect("block");
        let e = norm_err(&hidden, &f[&format!("block_{i}")]);
        assert!(e <= 1e-5, "{fixture}: block {i} error {e}");
        state = state.with_hidden(hidden);
    }
    let out = dit.finish(&state).expect("finish");
    let e = norm_err(&out, &f["out"]);
    assert!(e <= 1e-4, "{fixture}: output error {e}");
    // The plain forward is the same loop.
    let plain = dit.forward(x, t, &y).expect("forward");
    let same = (plain - &out).and_then(|d| d.abs()).expect("diff");
    assert_eq!(max_abs(&same), 0.0, "forward == embed/blocks/finish");
}

#[test]
fn forward_pixel_space_matches_diffusers() {
    check_forward("dit_pixel", "forward_pixel.safetensors");
}

#[test]
fn forward_at_non_native_size_matches_diffusers() {
    check_forward("dit_pixel", "forward_pixel_24.safetensors");
}

#[test]
fn forward_with_fractional_timestep_matches_diffusers() {
    check_forward("dit_pixel", "forward_pixel_frac.safetensors");
}

#[test]
fn forward_latent_space_matches_diffusers() {
    check_forward("dit_latent", "forward_latent.safetensors");
}

#[test]
fn pytorch_bin_checkpoint_loads_the_same_weights() {
    let st = model("dit_pixel");
    let bin = model("dit_pixel_bin");
    let f = load("forward_pixel.safetensors");
    let y = labels_u32(&f["class_labels"]);
    let a = st.forward(&f["x"], &f["timestep"], &y).expect("st");
    let b = bin.forward(&f["x"], &f["timestep"], &y).expect("bin");
    assert_eq!(norm_err(&a, &b), 0.0);
}

#[test]
fn half_precision_forward_is_close() {
    let dir = fixtures().join("dit_pixel");
    let f = load("forward_pixel.safetensors");
    let y = labels_u32(&f["class_labels"]);
    for dtype in [DType::F16, DType::BF16] {
        let dit = load_dit(&dir, dtype, &Device::Cpu).expect("loads");
        let out = dit.forward(&f["x"], &f["timestep"], &y).expect("forward");
        assert_eq!(out.dtype(), dtype);
        let e = norm_err(&out, &f["out"]);
        assert!(e <= 3e-2, "{dtype:?} error {e}");
    }
}

fn scheduler_table() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("schedulers.json")).expect("json");
    serde_json::from_str(&text).expect("parses")
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn assert_close(ours: &[f64], theirs: &[f64], tol: f64, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what}[{i}]: ours {a} vs diffusers {b}"
        );
    }
}

#[test]
fn alphas_cumprod_match_diffusers() {
    let json = scheduler_table();
    let theirs = floats(&json["alphas_cumprod"]);
    let ours = table::NoiseTable::dit_default().alphas_cumprod;
    assert_close(&ours, &theirs, 1e-6, "alphas_cumprod");
}

#[test]
fn timesteps_and_sigmas_match_diffusers_for_every_step_count() {
    let json = scheduler_table();
    let s = &json["schedulers"];
    for n in [1usize, 2, 7, 10, 25, 50, 100] {
        let key = n.to_string();
        let t = table::NoiseTable::dit_default;
        let d = &s["DDIMScheduler"]["steps"][&key];
        assert_close(
            ddim::Ddim::new(t(), n).timesteps(),
            &floats(&d["timesteps"]),
            0.0,
            "ddim t",
        );

        let d = &s["DPMSolverMultistepScheduler"]["steps"][&key];
        let dpm = dpm_solver::DpmSolverMultistep::new(t(), n);
        assert_close(dpm.timesteps(), &floats(&d["timesteps"]), 0.0, "dpm t");
        assert_close(dpm.sigmas(), &floats(&d["sigmas"]), 1e-6, "dpm sigmas");

        let d = &s["EulerDiscreteScheduler"]["steps"][&key];
        let eu = euler::Euler::new(t(), n);
        assert_close(eu.timesteps(), &floats(&d["timesteps"]), 1e-7, "euler t");
        assert_close(eu.sigmas(), &floats(&d["sigmas"]), 1e-6, "euler sigmas");
        let init = d["init_noise_sigma"].as_f64().expect("init");
        assert_close(&[eu.init_noise_sigma()], &[init], 1e-6, "euler init sigma");
    }
}

/// Replays diffusers' recorded model outputs through our scheduler alone.
fn check_scheduler_replay(fixture: &str, kind: SchedulerKind) {
    let f = load(fixture);
    let steps = f["timesteps"].dims1().expect("timesteps");
    let mut sched = kind
        .build(steps, &SchedulerConfig::default())
        .expect("scheduler");
    let init = sched.init_noise_sigma();
    let mut x = (&f["noise"] * init).expect("scale");
    for i in 0..steps {
        let eps = f["model_outputs"].get(i).expect("eps");
        x = sched.step(&eps, i, &x).expect("step");
        let e = norm_err(&x, &f["steps"].get(i).expect("step ref"));
        // Euler's first step works at σ ≈ 157, where f32 rounding of σ·ε alone is ~1e-5.
        assert!(e <= 1e-4, "{fixture}: step {i} error {e}");
    }
}

#[test]
fn schedulers_replay_diffusers_model_outputs() {
    check_scheduler_replay(
        "sample_dpm_pixel.safetensors",
        SchedulerKind::DpmSolverMultistep,
    );
    check_scheduler_replay("sample_ddim_pixel.safetensors", SchedulerKind::Ddim);
    check_scheduler_replay("sample_euler_pixel.safetensors", SchedulerKind::Euler);
}

fn check_sampling(model_dir: &str, fixture: &str, kind: SchedulerKind, guidance: f64) {
    check_sampling_cfg(model_dir, fixture, kind, guidance, CfgMode::Batched);
}

fn check_sampling_cfg(
    model_dir: &str,
    fixture: &str,
    kind: SchedulerKind,
    guidance: f64,
    cfg_mode: CfgMode,
) {
    let dit = model(model_dir);
    let f = load(fixture);
    let labels: Vec<u32> = f["class_labels"]
        .to_dtype(DType::U32)
        .and_then(|t| t.to_vec1())
        .expect("labels");
    let steps = f["timesteps"].dims1().expect("timesteps");
    let settings = SampleSettings {
        class_labels: labels,
        prompt: None,
        seed: 0,
        steps,
        guidance,
        cfg_mode,
        scheduler: kind,
        scheduler_config: SchedulerConfig::default(),
        size: None,
    };
    let mut seen = Vec::new();
    let result = denoise(
        &dit,
        &settings,
        &f["noise"],
        &mut PlainForward::default(),
        &mut |p| {
            seen.push(p.index);
            Flow::Continue
        },
    )
    .expect("sampling runs");
    assert_eq!(seen, (0..steps).collect::<Vec<_>>());
    let e = norm_err(&result.sample, &f["sample"]);
    assert!(e <= 1e-3, "{fixture}: final sample error {e}");
}

#[test]
fn dpm_solver_sampling_with_cfg_matches_diffusers() {
    check_sampling(
        "dit_pixel",
        "sample_dpm_pixel.safetensors",
        SchedulerKind::DpmSolverMultistep,
        4.0,
    );
}

#[test]
fn separate_cfg_sampling_matches_diffusers_batched_cfg() {
    // Two calls per step (conditional, then null class) instead of one batch of two.
    check_sampling_cfg(
        "dit_pixel",
        "sample_dpm_pixel.safetensors",
        SchedulerKind::DpmSolverMultistep,
        4.0,
        CfgMode::Separate,
    );
}

#[test]
fn ddim_sampling_with_cfg_matches_diffusers() {
    check_sampling(
        "dit_pixel",
        "sample_ddim_pixel.safetensors",
        SchedulerKind::Ddim,
        4.0,
    );
}

#[test]
fn euler_sampling_with_cfg_matches_diffusers() {
    check_sampling(
        "dit_pixel",
        "sample_euler_pixel.safetensors",
        SchedulerKind::Euler,
        4.0,
    );
}

#[test]
fn sampling_without_guidance_matches_diffusers() {
    check_sampling(
        "dit_latent",
        "sample_dpm_latent_nocfg.safetensors",
        SchedulerKind::DpmSolverMultistep,
        1.0,
    );
}
