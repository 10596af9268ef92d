//! `cachedit calibrate-teacache`: fits TeaCache's rescale polynomial for a model. Uncached runs
//! record, per call, how much block 0's modulated input and the model's output changed since the
//! previous call (relative L1); the degree-4 least-squares fit of output change on input change
//! (as TeaCache's authors fit theirs with `numpy.polyfit`) is printed, ready for the config
//! node's `coefficients`, and can be written as JSON.

use super::bench::DeviceArgs;
use anyhow::{bail, Context, Result};
use cachedit_nodes::cache::hook::TransformerHook;
use cachedit_nodes::cache::teacache::{fit_polynomial, rescale, Calibration};
use cachedit_nodes::kinds::sampler::latent_size_for;
use cachedit_nodes::models::blocks::BlockTransformer;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::AnyModel;
use cachedit_nodes::sampling::denoise::{
    denoise, initial_noise, CfgMode, Flow, PromptSettings, SampleSettings,
};
use cachedit_nodes::schedulers::SchedulerKind;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CalibrateTeaCacheArgs {
    /// A built-in model name, or a diffusers DiT or FLUX.1 checkpoint or pipeline folder.
    #[arg(long, default_value = "scenes-dit")]
    pub model: String,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Seeds; each runs with every class (class-conditional models) or prompt.
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Classes of a class-conditional model (default: every class).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<u32>,
    /// Prompts for a text model (repeat the flag for more).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Guidance scale (batched CFG for class models; FLUX.1-dev's embedded guidance).
    #[arg(long, default_value_t = 4.0)]
    pub guidance: f64,
    /// Image width and height in pixels (0 = the model's native size).
    #[arg(long, default_value_t = 0)]
    pub width: usize,
    #[arg(long, default_value_t = 0)]
    pub height: usize,
    /// T5 tokens of a text model's prompt.
    #[arg(long, default_value_t = 512)]
    pub max_sequence_length: usize,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Also write the coefficients and every (input change, output change) pair here (JSON).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &CalibrateTeaCacheArgs) -> Result<()> {
    let loaded = load_model(&args.model, &args.target.dtype, &args.target.device)
        .with_context(|| format!("loading {}", args.model))?;
    let model: &AnyModel = &loaded.model;
    let latent = model.latent();
    let scheduler = SchedulerKind::auto_for(&loaded.scheduler_config);
    let size = latent_size_for(&loaded, args.width, args.height)?;
    let samples: Vec<SampleSettings> = match (latent.classes, &loaded.text) {
        (Some(classes), _) => {
            let chosen: Vec<u32> = if args.classes.is_empty() {
                (0..classes as u32).collect()
            } else {
                args.classes.clone()
            };
            let config = &loaded.scheduler_config;
            args.seeds
                .iter()
                .flat_map(|&seed| {
                    chosen.iter().map(move |&class| SampleSettings {
                        class_labels: vec![class],
                        prompt: None,
                        seed,
                        steps: args.steps,
                        guidance: args.guidance,
                        cfg_mode: CfgMode::Batched,
                        scheduler,
                        scheduler_config: config.clone(),
                        size,
                    })
                })
                .collect()
        }
        (None, Some(text)) => {
            if args.prompt.is_empty() {
                bail!("this model is text-conditioned: give --prompt (one or more)");
            }
            let mut out = Vec::new();
            for prompt in &args.prompt {
                let embeds = text
                    .encode(prompt, args.max_sequence_length)
                    .map_err(anyhow::Error::msg)?;
                for &seed in &args.seeds {
                    out.push(SampleSettings {
                        class_labels: vec![],
                        prompt: Some(PromptSettings {
                            embeds: embeds.clone(),
                            prompt: prompt.clone(),
                            negative: String::new(),
                            true_cfg: 1.0,
                            negative_embeds: None,
                        }),
                        seed,
                        steps: args.steps,
                        guidance: args.guidance,
                        cfg_mode: CfgMode::Separate,
                        scheduler,
                        scheduler_config: loaded.scheduler_config.clone(),
                        size,
                    });
                }
            }
            out
        }
        (None, None) => bail!("a text model needs its pipeline's text encoders"),
    };
    let mut hook = Calibration::default();
    for (i, s) in samples.iter().enumerate() {
        eprintln!(
            "run {}/{}: seed {}{}",
            i + 1,
            samples.len(),
            s.seed,
            s.class_labels
                .first()
                .map_or(String::new(), |c| format!(", class {c}"))
        );
        let noise = initial_noise(model, s, model.device())?;
        TransformerHook::<AnyModel>::reset(&mut hook);
        denoise(model, s, &noise, &mut hook, &mut |_| Flow::Continue)?;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = hook.pairs.iter().copied().unzip();
    let Some(coefficients) = fit_polynomial(&xs, &ys, 4) else {
        bail!(
            "{} pairs cannot fit a degree-4 polynomial: run more steps or samples",
            xs.len()
        );
    };
    let mean = ys.iter().sum::<f64>() / ys.len() as f64;
    let total: f64 = ys.iter().map(|y| (y - mean).powi(2)).sum();
    let residual: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(&x, &y)| (y - rescale(&coefficients, x)).powi(2))
        .sum();
    let r2 = if total > 0.0 {
        1.0 - residual / total
    } else {
        1.0
    };
    let list = coefficients
        .iter()
        .map(|c| format!("{c:e}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "TeaCache rescale polynomial for {} ({} steps, {} runs, {} pairs, R² {r2:.4}):",
        args.model,
        args.steps,
        samples.len(),
        xs.len()
    );
    println!("{list}");
    println!("paste it into CacheDit Advanced Config's `coefficients` (strategy teacache)");
    if let Some(path) = &args.out {
        let doc = json!({
            "model": args.model,
            "steps": args.steps,
            "runs": samples.len(),
            "coefficients": coefficients,
            "r2": r2,
            "pairs": hook.pairs,
        });
        cachedit_nodes::safe_io::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
