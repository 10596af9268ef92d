//! `cachedit bench-serve`: holds one model loaded and times what a benchmark driver asks for,
//! one JSON request per stdin line, one JSON answer per stdout line, so that another program
//! (`tools/bench_vs_torch.py`) can interleave the project's runs with PyTorch's in one session
//! without paying the model load each round. Requests:
//!
//! * `{"op": "info"}`: the instruction set the CPU kernels use, the threads, the model's size;
//! * `{"op": "forward", "repeats": R, "noise": "x.npy"}`: R forwards of a CFG batch of 2 (class 1
//!   and the null class, timestep 500) on the latent in the file;
//! * `{"op": "sample", "steps": 25, "guidance": 4, "class_label": 1, "noise": "x.npy",
//!   "cache": null | {"fn": 1, "bn": 0, "threshold": 0.12, "warmup": 8, "max_continuous": -1},
//!   "out": "latents.npy"}`: one DPM-Solver++ run with batched CFG (uncached, or cache-dit's
//!   DBCache with those knobs), its final latents written to `out`.
//!
//! Each timed answer holds `wall_ms` and `cpu_ms` (the process's CPU time, all threads) per run.

use anyhow::{bail, Context, Result};
use cachedit_nodes::cache::hook::{PlainForward, TransformerHook};
use cachedit_nodes::cache::{hook_for_run, Decision, StepCacheConfig};
use cachedit_nodes::kernels::{self, Isa};
use cachedit_nodes::models::blocks::{self, BlockTransformer, Conditioning};
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::AnyModel;
use cachedit_nodes::sampling::denoise::{denoise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::sampling::latent_file::read_latent;
use cachedit_nodes::sampling::measure::process_cpu_ms;
use cachedit_nodes::schedulers::SchedulerKind;
use candle_core::Tensor;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// A diffusers DiT checkpoint or pipeline folder, or a built-in model name.
    #[arg(long)]
    pub model: String,
    /// f32 (what the CPU kernels run), f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// DBCache knobs of a `sample` request (cache-dit's names in short).
#[derive(Debug, Deserialize)]
struct CacheRequest {
    #[serde(rename = "fn")]
    front: usize,
    #[serde(rename = "bn", default)]
    back: usize,
    threshold: f64,
    #[serde(default)]
    warmup: usize,
    #[serde(default = "unlimited")]
    max_continuous: i64,
}

fn unlimited() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Info,
    Forward {
        #[serde(default = "one")]
        repeats: usize,
        noise: PathBuf,
    },
    Sample {
        steps: usize,
        guidance: f64,
        class_label: u32,
        noise: PathBuf,
        cache: Option<CacheRequest>,
        out: Option<PathBuf>,
    },
}

fn one() -> usize {
    1
}

fn noise_tensor(path: &Path, model: &AnyModel) -> Result<Tensor> {
    let latent = read_latent(path)?;
    Ok(latent.to_tensor(model.device())?)
}

/// Times `f`: wall and process CPU ms.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64)> {
    let cpu0 = process_cpu_ms().unwrap_or(0.0);
    let started = Instant::now();
    let value = f()?;
    let wall = started.elapsed().as_secs_f64() * 1e3;
    let cpu = process_cpu_ms().unwrap_or(0.0) - cpu0;
    Ok((value, wall, cpu))
}

fn answer(model: &AnyModel, request: Request) -> Result<Value> {
    match request {
        Request::Info => Ok(json!({
            "isa": Isa::detect().name(),
            "fma_peak_gflops": kernels::peak::fma_gflops(300),
            "threads": kernels::threads(),
            "blocks": blocks::total_blocks(model.block_lists()),
        })),
        Request::Forward { repeats, noise } => {
            let x = noise_tensor(&noise, model)?;
            let x = Tensor::cat(&[&x, &x], 0)?;
            let classes = model
                .latent()
                .classes
                .context("a class-conditional model")?;
            let cond = Conditioning::classes(vec![1, classes as u32], model.device())?;
            let t = Tensor::new(&[500f32, 500.0], model.device())?;
            let mut wall = Vec::new();
            let mut cpu = Vec::new();
            for _ in 0..repeats.max(1) {
                let (_, w, c) = timed(|| {
                    let out = blocks::forward(model, &x, &t, &cond)?;
                    model.device().synchronize()?;
                    Ok(out)
                })?;
                wall.push(w);
                cpu.push(c);
            }
            Ok(json!({ "wall_ms": wall, "cpu_ms": cpu }))
        }
        Request::Sample {
            steps,
            guidance,
            class_label,
            noise,
            cache,
            out,
        } => {
            let x = noise_tensor(&noise, model)?;
            let settings = SampleSettings {
                class_labels: vec![class_label],
                prompt: None,
                seed: 0,
                steps,
                guidance,
                cfg_mode: CfgMode::Batched,
                scheduler: SchedulerKind::DpmSolverMultistep,
                scheduler_config: Default::default(),
                size: Some((x.dim(2)?, x.dim(3)?)),
            };
            let mut hook: Box<dyn TransformerHook<AnyModel>> = match &cache {
                None => Box::new(PlainForward::default()),
                Some(c) => {
                    let mut config = StepCacheConfig::default();
                    config.db.fn_compute_blocks = c.front;
                    config.db.bn_compute_blocks = c.back;
                    config.db.residual_diff_threshold = c.threshold;
                    config.db.max_warmup_steps = c.warmup;
                    config.db.max_continuous_cached_steps = c.max_continuous;
                    hook_for_run(Arc::new(config), model.block_lists(), steps)?
                }
            };
            let mut cached = Vec::new();
            let mut evaluations = 0;
            let (result, wall, cpu) = timed(|| {
                Ok(denoise(model, &settings, &x, hook.as_mut(), &mut |p| {
                    for c in &p.calls {
                        evaluations += c.blocks_run;
                        if c.decision == Decision::Reused {
                            cached.push(c.step);
                        }
                    }
                    Flow::Continue
                })?)
            })?;
            if let Some(path) = out {
                result
                    .sample
                    .write_npy(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(json!({
                "wall_ms": [wall],
                "cpu_ms": [cpu],
                "cached_steps": cached,
                "block_evaluations": evaluations,
            }))
        }
    }
}

pub fn run(args: &BenchServeArgs) -> Result<()> {
    let loaded = load_model(&args.model, &args.dtype, &args.device)
        .with_context(|| format!("loading {}", args.model))?;
    if loaded.model.latent().classes.is_none() {
        bail!("bench-serve times class-conditional DiT models");
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", json!({"ready": true}))?;
    stdout.flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = serde_json::from_str::<Request>(&line)
            .map_err(anyhow::Error::from)
            .and_then(|r| answer(&loaded.model, r))
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}
