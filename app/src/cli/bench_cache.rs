//! `cachedit bench-cache`: every caching method on a model at 25 and 50 steps, uncached and
//! with the reference configs; wall time, measured vs. ideal speedup, PSNR/SSIM against the
//! uncached image, the classifier's "class kept" rate, the speed–quality Pareto front, and where
//! the step cache's overhead goes.

use super::bench::{machine, write_section, DeviceArgs};
use anyhow::{bail, Context, Result};
use cachedit_nodes::cache::config::MagCacheParams;
use cachedit_nodes::cache::hook::{CallInfo, PlainForward, TransformerHook};
use cachedit_nodes::cache::indicator::rel_l1;
use cachedit_nodes::cache::noise::ReuseNoise;
use cachedit_nodes::cache::scm::ScmPreset;
use cachedit_nodes::cache::{
    hook_for_run, CallRecord, CfgBranch, MaskPolicy, MaskSource, StepCache, StepCacheConfig,
    StepsMask, Strategy, TaylorIndexing, TaylorSeerConfig,
};
use cachedit_nodes::eval::classifier::{self, SceneClassifier};
use cachedit_nodes::image::convert::image_from_tensor;
use cachedit_nodes::image::RgbImage;
use cachedit_nodes::metrics::{psnr, ssim};
use cachedit_nodes::models::blocks::Conditioning;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::dit::{DiT, DiTConfig};
use cachedit_nodes::sampling::denoise::{denoise, initial_noise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::sampling::measure::{load_average_1m, process_cpu_ms};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchCacheArgs {
    /// Model: a built-in name or a checkpoint folder.
    #[arg(long, default_value = "scenes-dit")]
    pub model: String,
    /// Step counts to run (comma-separated).
    #[arg(long, default_value = "25,50", value_delimiter = ',')]
    pub steps: Vec<usize>,
    /// Images per config: image i has class i mod classes and seed i.
    #[arg(long, default_value_t = 10)]
    pub images: usize,
    /// Timed repeats of every run (interleaved across configs); the fastest counts.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    #[arg(long, default_value_t = 4.0)]
    pub guidance: f64,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Replace the step-cache section of this markdown file with the results.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// Predicts the class of a generated image: fills the "class kept" column.
type Classifier = dyn Fn(&RgbImage) -> Result<u32>;

/// The built-in scene classifier, for models that draw the scene dataset's images (32×32 RGB,
/// its ten classes); other models leave the column empty rather than guessing.
fn classifier(config: &DiTConfig) -> Result<Option<Box<Classifier>>> {
    let scenes = config.in_channels == 3
        && config.sample_size == classifier::IMAGE_SIZE
        && config.num_classes() == classifier::NUM_CLASSES;
    if !scenes {
        return Ok(None);
    }
    let device = Device::Cpu;
    let net = SceneClassifier::builtin(&device)?;
    Ok(Some(Box::new(move |image: &RgbImage| {
        net.classify(std::slice::from_ref(image), &device)?
            .first()
            .copied()
            .context("the classifier returned no label")
    })))
}

/// What the methods that need a model's own numbers were given: MagCache's magnitude ratios
/// and TeaCache's rescale polynomial, each calibrated on uncached runs of seeds the table does
/// not use.
struct Calibrations {
    mag_ratios: Vec<f64>,
    tea_coefficients: Vec<f64>,
}

/// Calibrates MagCache (its `calibrate` mode) and TeaCache (`calibrate-teacache`'s fit) on
/// `settings` with seeds far from the table's.
fn calibrate(dit: &DiT, settings: &[SampleSettings]) -> Result<Calibrations> {
    let mut mag = Vec::new();
    let mut tea = cachedit_nodes::cache::teacache::Calibration::default();
    // Two runs, more when the step count is too short for a quartic's worth of pairs.
    let Some(first) = settings.first() else {
        bail!("no settings to calibrate on");
    };
    for k in 0..8 {
        if k >= 2 && tea.pairs.len() >= 16 {
            break;
        }
        let s = SampleSettings {
            seed: 1000 + k as u64,
            ..settings.get(k).unwrap_or(first).clone()
        };
        let noise = initial_noise(dit, &s, dit.device())?;
        if k == 0 {
            let config = StepCacheConfig::mag_cache(
                0.0,
                MagCacheParams {
                    calibrate: true,
                    ..MagCacheParams::default()
                },
            );
            mag = run_once(dit, &s, &noise, Some(&config))?
                .calls
                .iter()
                .filter_map(|c| c.diff)
                .collect();
        }
        TransformerHook::<DiT>::reset(&mut tea);
        denoise(dit, &s, &noise, &mut tea, &mut |_| Flow::Continue)?;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = tea.pairs.iter().copied().unzip();
    let tea_coefficients = cachedit_nodes::cache::teacache::fit_polynomial(&xs, &ys, 4)
        .context("TeaCache calibration: too few pairs for a quartic")?;
    Ok(Calibrations {
        mag_ratios: mag,
        tea_coefficients,
    })
}

/// The reference configs of issue 4 on the studio defaults (reuse noise 0.001 included), then
/// every other method at the setting of its example workflow.
fn configs(cal: &Calibrations) -> Vec<(&'static str, Option<StepCacheConfig>)> {
    let studio = StepCacheConfig::studio_default;
    vec![
        ("uncached", None),
        (
            "fixed(2)",
            Some(StepCacheConfig {
                strategy: Strategy::Fixed,
                skip_interval: 2,
                ..studio()
            }),
        ),
        (
            "dynamic",
            Some(StepCacheConfig {
                strategy: Strategy::Dynamic,
                ..studio()
            }),
        ),
        ("adaptive F4B0 R0.12 W4", Some(studio())),
        ("F1B0 R0.12 + TaylorSeer O1", {
            let mut c = studio();
            c.db.fn_compute_blocks = 1;
            c.taylorseer = Some(TaylorSeerConfig {
                order: 1,
                indexing: TaylorIndexing::CacheDit,
            });
            Some(c)
        }),
        ("SCM medium dynamic", {
            let mut c = studio();
            c.db.steps_mask = Some(StepsMask {
                source: MaskSource::Preset(ScmPreset::Medium),
                policy: MaskPolicy::Dynamic,
            });
            Some(c)
        }),
        (
            "FBCache R0.03 (diffusers)",
            Some(StepCacheConfig::first_block(0.03)),
        ),
        (
            "TeaCache R0.05, identity polynomial",
            Some(StepCacheConfig::tea_cache(0.05)),
        ),
        (
            "TeaCache R0.02, calibrated polynomial",
            Some(StepCacheConfig {
                teacache_coefficients: Some(cal.tea_coefficients.clone()),
                ..StepCacheConfig::tea_cache(0.02)
            }),
        ),
        (
            "MagCache R0.03 K3, calibrated ratios",
            Some(StepCacheConfig::mag_cache(
                0.03,
                MagCacheParams {
                    mag_ratios: Some(cal.mag_ratios.clone()),
                    ..MagCacheParams::default()
                },
            )),
        ),
        (
            "PAB N2 (100, 800)",
            Some(StepCacheConfig::threshold_free(Strategy::Pab)),
        ),
        (
            "FasterCache (diffusers' defaults)",
            Some(StepCacheConfig::threshold_free(Strategy::FasterCache)),
        ),
        ("DBPrune F1B0 R0.06 W4", {
            let mut c = studio();
            c.strategy = Strategy::DbPrune;
            c.db.fn_compute_blocks = 1;
            c.db.residual_diff_threshold = 0.06;
            c.noise_scale = 0.0;
            Some(c)
        }),
        ("EasyCache R0.05", {
            let mut c = StepCacheConfig::threshold_free(Strategy::EasyCache);
            c.easycache.reuse_threshold = 0.05;
            Some(c)
        }),
        (
            "FastCache R0.05 M0.1 residual",
            Some(StepCacheConfig::threshold_free(Strategy::FastCache)),
        ),
    ]
}

/// Indices of the rows no other row beats on both speed and quality (higher measured speedup
/// and higher PSNR, at least one strictly).
fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| {
            let (s, q) = points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(s2, q2))| j != i && s2 >= s && q2 >= q && (s2 > s || q2 > q))
        })
        .collect()
}

/// One image's run.
struct Run {
    ms: f64,
    /// CPU time of the process (all threads) over the run, when the OS reports it.
    cpu_ms: Option<f64>,
    /// Time of the steps outside the transformer calls (guidance, scheduler, CFG batch).
    outside_ms: f64,
    image: RgbImage,
    calls: Vec<CallRecord>,
}

fn run_once(
    dit: &DiT,
    settings: &SampleSettings,
    noise: &Tensor,
    config: Option<&StepCacheConfig>,
) -> Result<Run> {
    let mut hook: Box<dyn TransformerHook<DiT>> = match config {
        Some(c) => hook_for_run(
            Arc::new(c.clone()),
            cachedit_nodes::models::blocks::BlockTransformer::block_lists(dit),
            settings.steps,
        )?,
        None => Box::new(PlainForward::default()),
    };
    let mut calls = Vec::new();
    let mut outside_ms = 0.0;
    let cpu_start = process_cpu_ms();
    let started = Instant::now();
    let out = denoise(dit, settings, noise, hook.as_mut(), &mut |p| {
        outside_ms += p.ms - p.calls.iter().map(|c| c.ms).sum::<f64>();
        calls.extend(p.calls.iter().cloned());
        Flow::Continue
    })?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = process_cpu_ms()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    let image = image_from_tensor(&out.sample)?
        .into_iter()
        .next()
        .context("no image")?;
    Ok(Run {
        ms,
        cpu_ms,
        outside_ms,
        image,
        calls,
    })
}

/// The 1-minute load average, as the table prints it.
fn load_average() -> Option<String> {
    load_average_1m().map(|l| format!("{l:.2}"))
}

/// One table row: a config at one step count, over all images.
struct Row {
    steps: usize,
    name: &'static str,
    signature: String,
    wall_ms: f64,
    cpu_ms: Option<f64>,
    speedup: f64,
    cpu_speedup: Option<f64>,
    ideal: f64,
    psnr: f64,
    ssim: f64,
    reused: usize,
    calls: usize,
    class_kept: Option<f64>,
    /// Front blocks of the config (`None` uncached), for the call-cost estimate.
    front: Option<usize>,
}

/// Lower-quartile ms of three kinds of call, measured interleaved (plain, computed, reused, in
/// a rotating order) so that a busy machine slows all three alike; the neighbours' load only
/// ever adds time, so a low quantile tracks the work where the median still wanders by ±4 %.
struct CallCosts {
    plain: f64,
    /// A computed call on the heaviest path: front residual, indicator (one transfer), middle
    /// residual store.
    computed: f64,
    /// A reused call: front blocks, stored residual + noise, no middle blocks.
    reused: f64,
}

/// The value a quarter of the way up the sorted samples.
fn lower_quartile(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get((v.len().saturating_sub(1)) / 4)
        .copied()
        .unwrap_or(0.0)
}

/// Rounds of the interleaved call-cost estimate (three calls each).
const CALL_ROUNDS: usize = 150;

fn call_costs(dit: &DiT, device: &Device, front: usize, rounds: usize) -> Result<CallCosts> {
    let cfg = dit.config();
    let s = cfg.sample_size;
    let shape = (2, cfg.in_channels, s, s);
    let inputs = [
        Tensor::randn(0f32, 1.0, shape, device)?,
        Tensor::randn(0f32, 1.0, shape, device)?,
    ];
    let t = Tensor::full(500f32, 2, device)?;
    let y = Tensor::new(&[1u32, cfg.num_classes() as u32], device)?;
    let info = |step| CallInfo {
        step_index: step,
        total_steps: 1000,
        timestep: 500.0,
        batched_cfg: true,
        branch: CfgBranch::Batched,
        shares: Default::default(),
    };
    let mut base = StepCacheConfig::studio_default();
    base.db.fn_compute_blocks = front;
    base.db.max_warmup_steps = 0;
    base.db.max_continuous_cached_steps = -1;
    // Alternating inputs move the residual far above 1e-6: measured, then computed.
    let mut computing = StepCache::new(Arc::new(StepCacheConfig {
        db: cachedit_nodes::cache::DbCacheConfig {
            residual_diff_threshold: 1e-6,
            ..base.db.clone()
        },
        ..base.clone()
    }));
    // Threshold 1: every call after the first reuses.
    let mut reusing = StepCache::new(Arc::new(StepCacheConfig {
        db: cachedit_nodes::cache::DbCacheConfig {
            residual_diff_threshold: 1.0,
            ..base.db.clone()
        },
        ..base
    }));
    let mut plain = PlainForward::default();
    let cond = Conditioning::Class(y.clone());
    let [a, b] = &inputs;
    for hook in [
        &mut computing as &mut dyn TransformerHook<DiT>,
        &mut reusing,
    ] {
        hook.reset();
        hook.call(dit, &info(0), a, &t, &cond)?;
    }
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        let x = if round % 2 == 0 { b } else { a };
        // Rotate who goes first, so no kind always pays for the previous one's cache state.
        for k in 0..3 {
            let kind = (round + k) % 3;
            let hook: &mut dyn TransformerHook<DiT> = match kind {
                0 => &mut plain,
                1 => &mut computing,
                _ => &mut reusing,
            };
            let started = Instant::now();
            hook.call(dit, &info(1), x, &t, &cond)?;
            times[kind].push(started.elapsed().as_secs_f64() * 1e3);
            hook.drain_records();
        }
    }
    let [plain, computed, reused] = times.map(lower_quartile);
    Ok(CallCosts {
        plain,
        computed,
        reused,
    })
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn total_cpu(runs: &[Run]) -> Option<f64> {
    runs.iter().map(|r| r.cpu_ms).sum()
}

fn fmt_psnr(p: f64) -> String {
    if p.is_infinite() {
        "identical".into()
    } else {
        format!("{p:.2}")
    }
}

/// Median of `f` over `n` timed runs (after one warm-up), in ms.
fn time_ms(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(n / 2).copied().unwrap_or(0.0))
}

/// Times the pieces of one call on the model's real shapes: what a reuse saves (a block) and
/// what the cache adds (indicator, residual store, reuse add, noise), next to the per-call
/// work no cache can skip (embed + finish).
fn overhead_table(dit: &DiT, device: &Device, batch: usize, outside_ms: f64) -> Result<String> {
    let cfg = dit.config();
    let s = cfg.sample_size;
    let x = Tensor::randn(0f32, 1.0, (batch, cfg.in_channels, s, s), device)?;
    let t = Tensor::full(500f32, batch, device)?;
    let y = Tensor::zeros(batch, candle_core::DType::U32, device)?;
    let state = dit.embed(&x, &t, &y)?;
    let h0 = state.hidden.clone();
    let h1 = dit.block(0, &state)?;
    let sync = || device.synchronize().map_err(anyhow::Error::from);
    let n = 20;
    let block = time_ms(n, || {
        dit.block(0, &state)?;
        sync()
    })?;
    let embed_finish = time_ms(n, || {
        let st = dit.embed(&x, &t, &y)?;
        dit.finish(&st)?;
        sync()
    })?;
    let residual = time_ms(n, || {
        let _r = (&h1 - &h0)?;
        sync()
    })?;
    let r = (&h1 - &h0)?;
    let indicator = time_ms(n, || {
        rel_l1(&r, &h1)?;
        Ok(())
    })?;
    let reuse_add = time_ms(n, || {
        let _h = (&h0 + &r)?;
        sync()
    })?;
    let mut noise = ReuseNoise::new(0.001, 0, CfgBranch::Batched);
    let mut step = 0;
    let noise_ms = time_ms(n, || {
        step += 1;
        noise.perturb(&r, step)?;
        sync()
    })?;
    let tokens = h0.dims().get(1).copied().unwrap_or(0);
    Ok(format!(
        "Pieces of one transformer call (batch {batch}, {tokens} tokens, median of {n}):\n\n\
         | piece | ms | paid by |\n|---|---:|---|\n\
         | one block (what a reuse skips, per middle block) | {block:.3} | every computed call |\n\
         | embed + finish (never skipped) | {embed_finish:.3} | every call |\n\
         | guidance + scheduler, outside the calls (uncached runs, per step) | {outside_ms:.3} | every step |\n\
         | front residual `h_F − h_in` | {residual:.3} | adaptive: measured and computed calls |\n\
         | relative-L1 indicator (2 sums, one transfer) | {indicator:.3} | adaptive: measured calls |\n\
         | middle residual store `h_M − h_F` | {residual:.3} | computed calls |\n\
         | reuse `h_F + R_M` | {reuse_add:.3} | reused calls |\n\
         | reuse noise (pool rotation, scale) | {noise_ms:.3} | reused calls, noise > 0 |\n"
    ))
}

pub fn run(args: &BenchCacheArgs) -> Result<()> {
    if args.steps.is_empty() || args.images == 0 {
        bail!("bench-cache needs at least one step count and one image");
    }
    let loaded = load_model(&args.model, &args.target.dtype, &args.target.device)
        .with_context(|| format!("loading {}", args.model))?;
    let Some(dit) = loaded.model.as_dit() else {
        bail!(
            "bench-cache times DiT models; {} is a {} model",
            args.model,
            loaded.model.family()
        );
    };
    let classes = dit.config().num_classes().max(1);
    let repeats = args.repeats.max(1);
    let judge = classifier(dit.config())?;
    let load_before = load_average();
    let mut rows = Vec::new();
    let mut outside = (0.0, 0usize);
    for &steps in &args.steps {
        let settings: Vec<SampleSettings> = (0..args.images)
            .map(|i| SampleSettings {
                class_labels: vec![(i % classes) as u32],
                prompt: None,
                seed: i as u64,
                steps,
                guidance: args.guidance,
                cfg_mode: CfgMode::Batched,
                scheduler: SchedulerKind::DpmSolverMultistep,
                scheduler_config: SchedulerConfig::default(),
                size: None,
            })
            .collect();
        let noises = settings
            .iter()
            .map(|s| initial_noise(dit, s, &loaded.device))
            .collect::<Result<Vec<_>, _>>()?;
        let cal = calibrate(dit, &settings)?;
        let configs = configs(&cal);
        // Warm-up: one uncached run, so no config pays first-call costs.
        if let (Some(s), Some(n)) = (settings.first(), noises.first()) {
            run_once(dit, s, n, None)?;
        }
        // best[config][image]: the fastest repeat; runs interleave configs against drift.
        let mut best: Vec<Vec<Option<Run>>> = configs
            .iter()
            .map(|_| (0..args.images).map(|_| None).collect())
            .collect();
        for repeat in 0..repeats {
            for (c, (name, config)) in configs.iter().enumerate() {
                eprintln!("{steps} steps, {name}: repeat {}/{repeats}", repeat + 1);
                for (i, (s, n)) in settings.iter().zip(&noises).enumerate() {
                    let mut run = run_once(dit, s, n, config.as_ref())?;
                    let slot = &mut best[c][i];
                    if let Some(b) = slot.as_ref() {
                        // Wall and CPU time each keep their own minimum over the repeats.
                        run.cpu_ms = min_opt(run.cpu_ms, b.cpu_ms);
                        if b.ms < run.ms {
                            run.ms = b.ms;
                        }
                    }
                    *slot = Some(run);
                }
            }
        }
        let runs: Vec<Vec<Run>> = best
            .into_iter()
            .map(|images| images.into_iter().flatten().collect())
            .collect();
        let Some(uncached) = runs.first() else {
            bail!("no uncached run");
        };
        let base_ms: f64 = uncached.iter().map(|r| r.ms).sum();
        let base_cpu = total_cpu(uncached);
        outside.0 += uncached.iter().map(|r| r.outside_ms).sum::<f64>();
        outside.1 += steps * uncached.len();
        for ((name, config), set) in configs.iter().zip(&runs) {
            let wall_ms: f64 = set.iter().map(|r| r.ms).sum();
            let cpu = total_cpu(set);
            let calls: Vec<&CallRecord> = set.iter().flat_map(|r| &r.calls).collect();
            let work: f64 = calls.iter().map(|c| c.block_work()).sum();
            let all_blocks: usize = calls.iter().map(|c| c.blocks_total).sum();
            // PSNR over the whole set (pooled MSE), SSIM averaged.
            let mut sse = 0.0;
            let mut pixels = 0usize;
            let mut ssim_sum = 0.0;
            let mut kept = 0usize;
            for (r, base) in set.iter().zip(uncached) {
                let p = psnr(&base.image, &r.image)?;
                let mse = if p.is_infinite() {
                    0.0
                } else {
                    255.0f64.powi(2) / 10f64.powf(p / 10.0)
                };
                sse += mse * base.image.pixels.len() as f64;
                pixels += base.image.pixels.len();
                ssim_sum += ssim(&base.image, &r.image)?;
            }
            let class_kept = match &judge {
                Some(classify) => {
                    for (r, s) in set.iter().zip(&settings) {
                        if s.class_labels.first() == Some(&classify(&r.image)?) {
                            kept += 1;
                        }
                    }
                    Some(kept as f64 / set.len().max(1) as f64)
                }
                None => None,
            };
            let mse = sse / pixels.max(1) as f64;
            rows.push(Row {
                steps,
                name,
                signature: config
                    .as_ref()
                    .map_or("NoCache".to_string(), |c| c.signature()),
                wall_ms,
                cpu_ms: cpu,
                speedup: base_ms / wall_ms.max(f64::MIN_POSITIVE),
                cpu_speedup: base_cpu.zip(cpu).map(|(b, c)| b / c.max(f64::MIN_POSITIVE)),
                ideal: all_blocks as f64 / work.max(f64::MIN_POSITIVE),
                psnr: if mse == 0.0 {
                    f64::INFINITY
                } else {
                    10.0 * (255.0f64.powi(2) / mse).log10()
                },
                ssim: ssim_sum / set.len().max(1) as f64,
                reused: calls
                    .iter()
                    .filter(|c| c.decision == cachedit_nodes::cache::Decision::Reused)
                    .count(),
                calls: calls.len(),
                class_kept,
                // The call-cost estimate models the step cache's calls (front blocks, then the
                // middle reused or not); the other methods' calls are shaped otherwise.
                front: config
                    .as_ref()
                    .filter(|c| {
                        matches!(
                            c.strategy,
                            Strategy::Fixed | Strategy::Dynamic | Strategy::Adaptive
                        )
                    })
                    .map(|c| c.db.fn_compute_blocks),
            });
        }
    }

    let mut table = format!(
        "Model `{}` ({} blocks) on {} ({:?}), {}; DPM-Solver++ 2M, batched CFG {}, {} images \
         per config (image i: class i mod {classes}, seed i), fastest of {repeats} interleaved \
         repeats. Wall = denoise loop for all images; CPU = the process's CPU time over the same \
         runs (all threads), which on a shared machine tracks the work where wall time also \
         tracks the other load. Measured = uncached ÷ cached (wall, CPU); ideal = block \
         evaluations uncached ÷ run. PSNR (pooled over the images) and SSIM are against the \
         uncached image of the same seed. The estimate puts the lower-quartile costs of \
         {CALL_ROUNDS} interleaved rounds of plain, computed and reused calls (table below) together in this row's mix of calls: what \
         the ratio would be without the machine's other load. Load average (1 min) before / after: {} / {}.\n\n\
         | steps | config | signature | reused calls | wall s | CPU s | measured (wall) | measured (CPU) | ideal | measured/ideal (wall) | measured/ideal (CPU) | est. measured/ideal (calls) | PSNR dB | SSIM | class kept |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.model,
        dit.num_blocks(),
        args.target.device,
        loaded.dtype,
        machine(),
        args.guidance,
        args.images,
        load_before.as_deref().unwrap_or("n/a"),
        load_average().as_deref().unwrap_or("n/a"),
    );
    let mut costs = BTreeMap::new();
    for front in rows.iter().filter_map(|r| r.front) {
        if let std::collections::btree_map::Entry::Vacant(e) = costs.entry(front) {
            e.insert(call_costs(dit, &loaded.device, front, CALL_ROUNDS)?);
        }
    }
    for r in &rows {
        let estimate = match r.front.and_then(|f| costs.get(&f)) {
            Some(c) => {
                let computed = (r.calls - r.reused) as f64;
                let cached = computed * c.computed + r.reused as f64 * c.reused;
                let speedup = r.calls as f64 * c.plain / cached.max(f64::MIN_POSITIVE);
                format!("{:.2}", speedup / r.ideal)
            }
            None if r.signature == "NoCache" => "1.00".into(),
            None => "n/a".into(),
        };
        let kept = r
            .class_kept
            .map_or("n/a".to_string(), |k| format!("{:.0}%", k * 100.0));
        let cpu_s = r.cpu_ms.map_or("n/a".into(), |c| format!("{:.2}", c / 1e3));
        let (cpu_x, cpu_ratio) = r.cpu_speedup.map_or(("n/a".into(), "n/a".into()), |x| {
            (format!("{x:.2}x"), format!("{:.2}", x / r.ideal))
        });
        table.push_str(&format!(
            "| {} | {} | `{}` | {}/{} | {:.2} | {cpu_s} | {:.2}x | {cpu_x} | {:.2}x | {:.2} | {cpu_ratio} | {estimate} | {} | {:.4} | {kept} |\n",
            r.steps,
            r.name,
            r.signature,
            r.reused,
            r.calls,
            r.wall_ms / 1e3,
            r.speedup,
            r.ideal,
            r.speedup / r.ideal,
            fmt_psnr(r.psnr),
            r.ssim,
        ));
    }
    for &steps in &args.steps {
        let at: Vec<&Row> = rows.iter().filter(|r| r.steps == steps).collect();
        let points: Vec<(f64, f64)> = at.iter().map(|r| (r.speedup, r.psnr)).collect();
        let front: Vec<String> = pareto_front(&points)
            .into_iter()
            .map(|i| {
                format!(
                    "{} ({:.2}x, {} dB)",
                    at[i].name,
                    at[i].speedup,
                    fmt_psnr(at[i].psnr)
                )
            })
            .collect();
        table.push_str(&format!(
            "\nPareto front at {steps} steps (measured speedup against PSNR; no other row is \
             faster and closer at once): {}.\n",
            front.join("; ")
        ));
    }
    if judge.is_none() {
        table.push_str(
            "\nclass kept: n/a, the scene classifier only judges 32×32 RGB models of the scene classes.\n",
        );
    }
    let outside_ms = outside.0 / outside.1.max(1) as f64;
    let mut overhead = overhead_table(dit, &loaded.device, 2, outside_ms)?;
    overhead.push_str(&format!(
        "\nWhole calls, interleaved, lower quartile of {CALL_ROUNDS} ({} blocks):\n\n\
         | front blocks | plain call ms | computed call ms (overhead) | reused call ms | reused ÷ plain | blocks share |\n\
         |---:|---:|---:|---:|---:|---:|\n",
        dit.num_blocks()
    ));
    for (front, c) in &costs {
        overhead.push_str(&format!(
            "| {front} | {:.3} | {:.3} ({:+.1}%) | {:.3} | {:.3} | {:.3} |\n",
            c.plain,
            c.computed,
            (c.computed / c.plain - 1.0) * 100.0,
            c.reused,
            c.reused / c.plain,
            *front as f64 / dit.num_blocks().max(1) as f64,
        ));
    }
    let body = format!("{table}\n{overhead}");
    println!("{body}");
    if let Some(path) = &args.write {
        let command =
            format!(
            "cargo run {}-p cachedit -- bench-cache --model {} --steps {} --images {} --repeats \
             {repeats} --device {} --write {}",
            if cfg!(debug_assertions) { "" } else { "--release " },
            args.model,
            args.steps
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
            args.images,
            args.target.device,
            path.display()
        );
        write_section(
            path,
            "step-cache",
            "Step cache: speed and quality",
            &format!("{body}\nReproduce: `{command}`\n"),
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn the_front_keeps_the_rows_nothing_beats_on_both_axes() {
        // (speedup, PSNR): 1 beats 0 on both; 2 is faster but worse; 3 ties 2 on speed, worse.
        let points = [
            (1.2, 30.0),
            (1.3, 31.0),
            (2.0, 20.0),
            (2.0, 18.0),
            (1.0, f64::INFINITY),
        ];
        assert_eq!(pareto_front(&points), vec![1, 2, 4]);
    }
}
