//! Sampler: runs the denoise loop (seeded noise, classifier-free guidance, scheduler) on a
//! model, every transformer call through the step cache (or the plain forward), reports each
//! step with its call records, and can time an uncached run of the same settings.

use crate::cache::hook::{PlainForward, TransformerHook};
use crate::cache::{hook_for_run, CacheSummary, NO_CACHE};
use crate::exec::context::NodeContext;
use crate::exec::data::Data;
use crate::exec::events::{MeasureProgress, StepProgress};
use crate::image::RgbImage;
use crate::metrics::{psnr, ssim};
use crate::models::blocks::BlockTransformer;
use crate::models::{AnyModel, LoadedModel};
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec, PortType,
    Preflight, PreflightContext,
};
use crate::sampling::denoise::{
    check_settings, denoise_with_preview, initial_noise, CfgMode, Flow, LatentPreview, Preview,
    PromptSettings, SampleResult, SampleSettings,
};
use crate::sampling::interleave::{run_interleaved, CachedRun};
use crate::sampling::latent_file::read_latent;
use crate::sampling::measure::load_average_1m;
use crate::sampling::stats::{Measured, SamplerStats, StepStat};
use crate::sampling::vae_preview::VaePreview;
use crate::sampling::SamplingError;
use crate::schedulers::{SchedulerConfig, SchedulerKind};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub struct Sampler;

impl NodeKind for Sampler {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "Sampler",
            title: "Sampler",
            category: "sampling",
            help: "Denoises seeded noise into an image of the chosen class (DiT) or of the \
                   prompt (FLUX.1), with guidance. A step-cache config on `cache` lets it reuse \
                   transformer work.",
            inputs: vec![
                PortSpec::required("model", PortType::Model, "the model to sample"),
                PortSpec::optional("cache", PortType::CacheConfig, "step-cache settings"),
            ],
            outputs: vec![
                PortSpec::output("image", PortType::Image, "the generated image"),
                PortSpec::output("stats", PortType::RunStats, "per-step timings of this run"),
            ],
            params: vec![
                ParamSpec::int(
                    "class_label",
                    0,
                    0,
                    999,
                    "class to generate (model classes 0..N-1)",
                ),
                ParamSpec::int(
                    "seed",
                    0,
                    0,
                    u32::MAX as i64,
                    "noise seed; same seed, same image",
                ),
                ParamSpec::text(
                    "prompt",
                    "",
                    "text-conditioned models (FLUX.1): what to draw; encoded once per prompt \
                     while the model stays loaded",
                ),
                ParamSpec::text(
                    "negative_prompt",
                    "",
                    "text-conditioned models, with true_cfg above 1: what to steer away from",
                )
                .advanced(),
                ParamSpec::float(
                    "true_cfg",
                    1.0,
                    1.0,
                    30.0,
                    "text-conditioned models: classifier-free guidance with the negative \
                     prompt (two calls per step; FluxPipeline's true_cfg_scale); 1 = off",
                )
                .advanced(),
                ParamSpec::int(
                    "max_sequence_length",
                    512,
                    1,
                    4096,
                    "text-conditioned models: T5 tokens the prompt is padded or cut to \
                     (FluxPipeline's max_sequence_length)",
                )
                .advanced(),
                ParamSpec::int(
                    "width",
                    0,
                    0,
                    8192,
                    "image width in pixels; 0 = the model's native size",
                )
                .advanced(),
                ParamSpec::int(
                    "height",
                    0,
                    0,
                    8192,
                    "image height in pixels; 0 = the model's native size",
                )
                .advanced(),
                ParamSpec::text(
                    "latent_file",
                    "",
                    "optional: start from the noise in this .npy or .safetensors file \
                     ([C, H, W] or [1, C, H, W], unscaled, as torch's randn drew it) instead \
                     of the seed, to reproduce a PyTorch run exactly",
                ),
            ]
            .into_iter()
            .chain(loop_params())
            .chain([
                ParamSpec::boolean(
                    "baseline",
                    false,
                    "with a step cache: also run uncached (same settings) to measure the real \
                     speedup and the quality loss (PSNR, SSIM); takes `baseline_rounds` times \
                     two runs",
                ),
                ParamSpec::int(
                    "baseline_rounds",
                    3,
                    1,
                    20,
                    "with `baseline`: interleaved rounds of one uncached and one cached run; \
                     the speedup is the ratio of the medians, with the range of the rounds",
                ),
            ])
            .collect(),
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let model = inputs.require("model")?.as_model("model")?.clone();
        let cache = match inputs.get("cache") {
            Some(c) => Some(c.as_cache_config("cache")?.clone()),
            None => None,
        };
        let (scheduler, cfg_mode) = scheduler_and_cfg(params, &model.scheduler_config)?;
        let mut settings = SampleSettings {
            class_labels: vec![params.int("class_label")? as u32],
            prompt: prompt_settings(&model, params)?,
            seed: params.int("seed")? as u64,
            steps: params.int("steps")? as usize,
            guidance: params.float("guidance")?,
            cfg_mode,
            scheduler,
            scheduler_config: model.scheduler_config.clone(),
            size: latent_size(&model, params)?,
        };
        // The config is validated and its schedule built once, here, for this model and run.
        let mut hook: Box<dyn TransformerHook<AnyModel>> = match &cache {
            Some(c) => hook_for_run(c.clone(), model.model.block_lists(), settings.steps)?,
            None => Box::new(PlainForward::default()),
        };
        let started = Instant::now();
        let latent_file = params.text("latent_file")?.trim().to_string();
        let noise = if latent_file.is_empty() {
            initial_noise(&model.model, &settings, &model.device)?
        } else {
            let noise = starting_latent(&latent_file, &model.model, &model.device)?;
            let (_, _, h, w) = noise.dims4().map_err(|e| NodeError::Other(e.to_string()))?;
            settings.size = Some((h, w));
            check_settings(&model.model, &settings)?;
            noise
        };
        // Live previews through the VAE every few steps when the pipeline has one.
        let mut preview: Box<dyn Preview> = match &model.vae {
            Some(vae) => Box::new(VaePreview::new(vae.clone())),
            None => Box::new(LatentPreview::default()),
        };
        let mut calls = Vec::new();
        let mut on_live_step = |progress: &StepProgress| {
            calls.extend(progress.calls.iter().cloned());
            ctx.step(progress.clone());
            flow(ctx)
        };
        // With `baseline`, the cached run the user sees is the first of interleaved rounds
        // against its uncached twin (sampling/interleave.rs).
        let interleaved = match (&cache, params.boolean("baseline")?) {
            (Some(_), true) => {
                let rounds = params.int("baseline_rounds")? as usize;
                let mut on_progress = |p: &MeasureProgress| {
                    ctx.measure(*p);
                    flow(ctx)
                };
                Some(cancelled(run_interleaved(
                    &model.model,
                    &settings,
                    &noise,
                    CachedRun {
                        hook: hook.as_mut(),
                        live_preview: preview.as_mut(),
                    },
                    rounds,
                    &mut on_live_step,
                    &mut on_progress,
                ))?)
            }
            _ => None,
        };
        let (result, peak_bytes) = match &interleaved {
            Some(r) => (r.live.clone(), r.live_peak_bytes),
            None => {
                let result = denoise_with_preview(
                    &model.model,
                    &settings,
                    &noise,
                    hook.as_mut(),
                    preview.as_mut(),
                    &mut on_live_step,
                );
                (cancelled(result)?, hook.peak_bytes())
            }
        };
        let image = image_of(&model, &result)?;
        let signature = cache
            .as_ref()
            .map_or(NO_CACHE.to_string(), |c| c.signature());
        let summary = CacheSummary::from_records(&signature, &calls, peak_bytes);
        let denoise_ms = loop_ms(&result);
        let measured = match interleaved {
            Some(r) => {
                let base_image = image_of(&model, &r.baseline)?;
                Measured::from_rounds(
                    &r.baseline_runs,
                    &r.cached_runs,
                    summary.ideal_speedup,
                    (psnr(&base_image, &image)?, ssim(&base_image, &image)?),
                    r.repeatable,
                    load_average_1m(),
                )
            }
            None => None,
        };
        let stats = Arc::new(SamplerStats {
            model: model.name.clone(),
            scheduler: scheduler.name().to_string(),
            seed: settings.seed,
            latent_file: (!latent_file.is_empty()).then(|| latent_file.clone()),
            class_labels: if settings.prompt.is_some() {
                vec![]
            } else {
                settings.class_labels.clone()
            },
            prompt: settings.prompt.as_ref().map(|p| p.prompt.clone()),
            negative_prompt: settings
                .prompt
                .as_ref()
                .filter(|p| p.negative_embeds.is_some())
                .map(|p| p.negative.clone()),
            guidance: settings.guidance,
            cfg_mode: cfg_mode.name().to_string(),
            transformer_calls: calls.len(),
            block_evaluations: summary.block_evaluations,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            denoise_ms,
            steps: result.steps.iter().map(StepStat::from).collect(),
            calls,
            summary: Some(summary),
            measured,
        });
        ctx.stats(stats.clone());
        Ok(Outputs::from([
            ("image".to_string(), Data::Image(Arc::new(image))),
            ("stats".to_string(), Data::RunStats(stats)),
        ]))
    }

    /// The class fits the model; the starting latent reads and fits it.
    fn preflight(&self, params: &Params, ctx: &PreflightContext) -> Preflight {
        let mut problems = Vec::new();
        let Some(model) = ctx.model else {
            return Preflight::default();
        };
        // Text-conditioned models (no classes) take any prompt, the empty one included.
        let class_model = model.num_classes > 0;
        if let (true, Ok(class)) = (class_model, params.int("class_label")) {
            if class < 0 || class as usize >= model.num_classes {
                problems.push((
                    "class_label",
                    format!(
                        "class {class} is out of range: the model has classes 0..{}",
                        model.num_classes.saturating_sub(1)
                    ),
                ));
            }
        }
        let path = params.text("latent_file").map(str::trim).unwrap_or("");
        if !path.is_empty() {
            let checked = read_latent(Path::new(path))
                .map_err(|e| e.to_string())
                .and_then(|latent| {
                    latent
                        .check_for_model(model.in_channels, model.patch_size)
                        .map_err(|m| format!("{path}: {m}"))
                });
            if let Err(message) = checked {
                problems.push(("latent_file", message));
            }
        }
        Preflight {
            model: None,
            problems,
        }
    }
}

/// The prompt and its encodings for a text-conditioned model; `None` for a class model.
fn prompt_settings(
    model: &LoadedModel,
    params: &Params,
) -> Result<Option<PromptSettings>, NodeError> {
    if model.model.latent().classes.is_some() {
        return Ok(None);
    }
    let Some(text) = &model.text else {
        return Err(NodeError::Other(format!(
            "{} needs its text encoders to take a prompt: load the whole pipeline folder \
             (text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/ beside transformer/)",
            model.name
        )));
    };
    let length = params.int("max_sequence_length")? as usize;
    let encode = |field: &str, prompt: &str| {
        text.encode(prompt, length)
            .map_err(|m| NodeError::Param(field.into(), m))
    };
    let prompt = params.text("prompt")?.to_string();
    let negative = params.text("negative_prompt")?.to_string();
    let true_cfg = params.float("true_cfg")?;
    // FluxPipeline runs true CFG only with a negative prompt.
    let negative_embeds = if true_cfg > 1.0 && !negative.is_empty() {
        Some(encode("negative_prompt", &negative)?)
    } else {
        None
    };
    Ok(Some(PromptSettings {
        embeds: encode("prompt", &prompt)?,
        prompt,
        negative,
        true_cfg,
        negative_embeds,
    }))
}

/// The latent size the params' `width` × `height` pixels ask for (see [`latent_size_for`]).
fn latent_size(model: &LoadedModel, params: &Params) -> Result<Option<(usize, usize)>, NodeError> {
    latent_size_for(
        model,
        params.int("width")? as usize,
        params.int("height")? as usize,
    )
}

/// The latent size `w` × `h` pixels ask for (`None`: the native size; 0 = that side native);
/// the error names the param whose value does not fit the VAE's and the patch's multiples.
pub fn latent_size_for(
    model: &LoadedModel,
    w: usize,
    h: usize,
) -> Result<Option<(usize, usize)>, NodeError> {
    if w == 0 && h == 0 {
        return Ok(None);
    }
    let latent = model.model.latent();
    let down = model.vae.as_ref().map_or(1, |v| v.config().downscale());
    let step = down * latent.multiple;
    let side = |name: &str, px: usize, native: usize| -> Result<usize, NodeError> {
        if px == 0 {
            return Ok(native);
        }
        if !px.is_multiple_of(step) {
            return Err(NodeError::Param(
                name.into(),
                format!(
                    "{px} px is not a multiple of {step} (the VAE's ×{down} times the \
                     model's latent multiple {})",
                    latent.multiple
                ),
            ));
        }
        Ok(px / down)
    };
    Ok(Some((
        side("height", h, latent.sample_size.0)?,
        side("width", w, latent.sample_size.1)?,
    )))
}

/// The noise in `path` as a `[1, C, H, W]` tensor, checked against the model.
fn starting_latent(
    path: &str,
    model: &AnyModel,
    device: &candle_core::Device,
) -> Result<candle_core::Tensor, NodeError> {
    let bad = |message: String| NodeError::Param("latent_file".into(), message);
    let latent = read_latent(Path::new(path)).map_err(|e| bad(e.to_string()))?;
    let spec = model.latent();
    latent
        .check_for_model(spec.channels, spec.multiple)
        .map_err(|m| bad(format!("{path}: {m}")))?;
    latent
        .to_tensor(device)
        .map_err(|e| bad(format!("{path}: {}", e.message)))
}

/// The params a Sampler and a Compare share: steps, guidance, scheduler, guidance mode.
pub(crate) fn loop_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::int("steps", 25, 1, 1000, "denoising steps"),
        ParamSpec::float(
            "guidance",
            4.0,
            1.0,
            30.0,
            "classifier-free guidance scale; 1 = off",
        ),
        ParamSpec::choice(
            "scheduler",
            AUTO_SCHEDULER,
            SCHEDULER_CHOICES,
            "auto (the pipeline's own scheduler class, else dpm++2m), dpm++2m \
             (DPM-Solver++ 2M), ddim, euler or flow-euler (flow matching, FLUX.1), as in \
             diffusers",
        ),
        ParamSpec::choice(
            "cfg_mode",
            CfgMode::Batched.name(),
            CfgMode::NAMES,
            "batched: conditional + null class in one call (DiTPipeline); separate: \
             two calls per step, each with its own step-cache state",
        ),
    ]
}

/// The `scheduler` choice that takes the pipeline's own class.
pub(crate) const AUTO_SCHEDULER: &str = "auto";

/// `auto`, then every scheduler by name.
const SCHEDULER_CHOICES: &[&str] = &["auto", "dpm++2m", "ddim", "euler", "flow-euler"];

/// The scheduler and guidance mode `params` choose (`auto`: the class `config` names, else
/// DPM-Solver++); an unknown name names its param.
pub(crate) fn scheduler_and_cfg(
    params: &Params,
    config: &SchedulerConfig,
) -> Result<(SchedulerKind, CfgMode), NodeError> {
    let scheduler_name = params.text("scheduler")?;
    let scheduler = if scheduler_name == AUTO_SCHEDULER {
        SchedulerKind::auto_for(config)
    } else {
        SchedulerKind::parse(scheduler_name).ok_or_else(|| {
            NodeError::Param(
                "scheduler".into(),
                format!("unknown scheduler {scheduler_name:?}"),
            )
        })?
    };
    let cfg_name = params.text("cfg_mode")?;
    let cfg_mode = CfgMode::parse(cfg_name)
        .ok_or_else(|| NodeError::Param("cfg_mode".into(), format!("unknown mode {cfg_name:?}")))?;
    Ok((scheduler, cfg_mode))
}

fn flow(ctx: &NodeContext) -> Flow {
    if ctx.is_cancelled() {
        Flow::Stop
    } else {
        Flow::Continue
    }
}

/// Denoise-loop wall time: the sum of the steps.
fn loop_ms(result: &SampleResult) -> f64 {
    result.steps.iter().map(|s| s.ms).sum()
}

/// A cancel becomes the node's cancel.
fn cancelled<T>(result: Result<T, SamplingError>) -> Result<T, NodeError> {
    match result {
        Err(SamplingError::Cancelled) => Err(NodeError::Cancelled),
        other => Ok(other?),
    }
}

/// The first image of the batch (through the model's VAE when it has one).
fn image_of(model: &LoadedModel, result: &SampleResult) -> Result<RgbImage, NodeError> {
    model
        .images(&result.sample)?
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Other("the sampler produced no image".into()))
}
