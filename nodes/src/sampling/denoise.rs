//! The denoise loop: seeded noise, classifier-free guidance as diffusers' `DiTPipeline` does it
//! (batched) or as two calls per step (separate), the learned-sigma split, the scheduler
//! update, and one hook around every transformer call.

use super::SamplingError;
use crate::cache::hook::{CallInfo, TransformerHook};
use crate::cache::CfgBranch;
use crate::image::convert::image_from_tensor;
use crate::image::RgbImage;
use crate::models::blocks::{BlockTransformer, Conditioning};
use crate::models::text::PromptEmbeds;
use crate::rng::Rng;
use crate::sampling::progress::StepProgress;
use crate::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Least wall time between two step previews (see [`StepProgress::preview`]); the first and
/// the last step always carry one.
pub const PREVIEW_INTERVAL: Duration = Duration::from_millis(100);

/// Makes the live previews: asked after each step (outside its timing) whether and what to
/// show of the current sample `x`.
pub trait Preview {
    /// `index` of `total` steps; `None` = no new preview this step.
    fn preview(&mut self, index: usize, total: usize, x: &Tensor) -> Option<Arc<RgbImage>>;
}

/// The default: the sample's first image as pixels or the approximate latent colours, at
/// most every [`PREVIEW_INTERVAL`] and on the first and last step.
#[derive(Debug, Default)]
pub struct LatentPreview {
    last: Option<Instant>,
}

impl Preview for LatentPreview {
    fn preview(&mut self, index: usize, total: usize, x: &Tensor) -> Option<Arc<RgbImage>> {
        if index + 1 == total || self.last.is_none_or(|p| p.elapsed() >= PREVIEW_INTERVAL) {
            self.last = Some(Instant::now());
            preview_of(x)
        } else {
            None
        }
    }
}

/// The first image of the current sample, for a live preview. A sample that cannot be
/// decoded gives no preview rather than failing the run.
pub fn preview_of(x: &Tensor) -> Option<Arc<RgbImage>> {
    let first = x.narrow(0, 0, 1).ok()?;
    image_from_tensor(&first)
        .ok()?
        .into_iter()
        .next()
        .map(Arc::new)
}

/// How classifier-free guidance calls the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CfgMode {
    /// One call per step on a batch of conditional + null-class inputs (DiTPipeline).
    #[default]
    Batched,
    /// Two calls per step, conditional then unconditional, each its own step-cache branch.
    Separate,
}

impl CfgMode {
    pub const NAMES: &'static [&'static str] = &["batched", "separate"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "batched" => Some(CfgMode::Batched),
            "separate" => Some(CfgMode::Separate),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CfgMode::Batched => "batched",
            CfgMode::Separate => "separate",
        }
    }
}

/// The prompt of a text-conditioned model, with its encodings.
#[derive(Debug, Clone)]
pub struct PromptSettings {
    pub prompt: String,
    /// Used when `true_cfg` is above 1 (FluxPipeline's `negative_prompt`).
    pub negative: String,
    /// True classifier-free guidance with the negative prompt (FluxPipeline's
    /// `true_cfg_scale`); 1 = off. Guidance-distilled models take `guidance` as an input.
    pub true_cfg: f64,
    pub embeds: Arc<PromptEmbeds>,
    /// The negative prompt's encoding, when true CFG runs.
    pub negative_embeds: Option<Arc<PromptEmbeds>>,
}

/// Equal when the texts and the scale are: the encodings follow from them.
impl PartialEq for PromptSettings {
    fn eq(&self, other: &Self) -> bool {
        self.prompt == other.prompt
            && self.negative == other.negative
            && self.true_cfg == other.true_cfg
            && self.negative_embeds.is_some() == other.negative_embeds.is_some()
    }
}

/// What to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSettings {
    /// One class per image in the batch (class-conditional models).
    pub class_labels: Vec<u32>,
    /// The prompt (text-conditioned models; one image).
    pub prompt: Option<PromptSettings>,
    pub seed: u64,
    pub steps: usize,
    /// Classifier-free guidance scale; guidance runs only when it is above 1 (as DiTPipeline).
    /// For a model that embeds guidance (FLUX.1-dev) it is the embedded scale instead.
    pub guidance: f64,
    /// How guidance runs (ignored when guidance is off).
    pub cfg_mode: CfgMode,
    pub scheduler: SchedulerKind,
    /// The fields the scheduler class takes from (the model's `scheduler_config.json`, or
    /// DiT's default).
    pub scheduler_config: SchedulerConfig,
    /// Output size (height, width) in model pixels/latents; `None` = the model's sample size.
    pub size: Option<(usize, usize)>,
}

impl SampleSettings {
    /// Images per run: one per class label, or one for a prompt.
    pub fn batch(&self) -> usize {
        if self.prompt.is_some() {
            1
        } else {
            self.class_labels.len()
        }
    }
}

/// One finished step, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub index: usize,
    pub timestep: f64,
    pub ms: f64,
}

/// What sampling produced.
#[derive(Debug, Clone)]
pub struct SampleResult {
    /// Final sample `[B, C, H, W]`, f32, on the model's device.
    pub sample: Tensor,
    pub steps: Vec<StepRecord>,
}

/// Whether the caller wants the loop to go on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

fn candle(context: &'static str) -> impl FnOnce(candle_core::Error) -> SamplingError {
    move |source| SamplingError::Candle { context, source }
}

/// Checks settings against the model; the error names the field at fault.
pub fn check_settings<M: BlockTransformer + ?Sized>(
    model: &M,
    s: &SampleSettings,
) -> Result<(usize, usize), SamplingError> {
    let latent = model.latent();
    let invalid = |field: &'static str, message: String| SamplingError::Invalid { field, message };
    match (latent.classes, &s.prompt) {
        (None, None) => {
            return Err(invalid(
                "prompt",
                "this model is text-conditioned: it needs a prompt".into(),
            ))
        }
        (None, Some(_)) => {}
        (Some(classes), _) => {
            if s.class_labels.is_empty() {
                return Err(invalid(
                    "class_label",
                    "at least one class label is needed".into(),
                ));
            }
            if let Some(&bad) = s.class_labels.iter().find(|&&c| c as usize >= classes) {
                return Err(invalid(
                    "class_label",
                    format!(
                        "class {bad} is out of range: this model has classes 0..{}",
                        classes.saturating_sub(1)
                    ),
                ));
            }
        }
    }
    if s.steps == 0 {
        return Err(invalid("steps", "at least one step is needed".into()));
    }
    let (h, w) = s.size.unwrap_or(latent.sample_size);
    let p = latent.multiple;
    if h == 0 || w == 0 || h % p != 0 || w % p != 0 {
        return Err(invalid(
            "size",
            format!("{h}×{w} is not a positive multiple of the patch size {p}"),
        ));
    }
    Ok((h, w))
}

/// The initial noise for `settings` (unscaled standard normal, f32, on `device`).
pub fn initial_noise<M: BlockTransformer + ?Sized>(
    model: &M,
    settings: &SampleSettings,
    device: &Device,
) -> Result<Tensor, SamplingError> {
    let (h, w) = check_settings(model, settings)?;
    let shape = (settings.batch(), model.latent().channels, h, w);
    Rng::new(settings.seed)
        .randn(shape, device)
        .map_err(candle("drawing noise"))
}

/// Runs the whole loop from `noise` (see [`initial_noise`]). `on_step` sees each finished step
/// and may stop the loop (cancel), which returns `SamplingError::Cancelled`.
pub fn denoise<M: BlockTransformer + ?Sized>(
    model: &M,
    settings: &SampleSettings,
    noise: &Tensor,
    hook: &mut dyn TransformerHook<M>,
    on_step: &mut dyn FnMut(&StepProgress) -> Flow,
) -> Result<SampleResult, SamplingError> {
    denoise_with_preview(
        model,
        settings,
        noise,
        hook,
        &mut LatentPreview::default(),
        on_step,
    )
}

/// [`denoise`] with the live previews made by `preview` (the Sampler's VAE previews).
pub fn denoise_with_preview<M: BlockTransformer + ?Sized>(
    model: &M,
    settings: &SampleSettings,
    noise: &Tensor,
    hook: &mut dyn TransformerHook<M>,
    preview: &mut dyn Preview,
    on_step: &mut dyn FnMut(&StepProgress) -> Flow,
) -> Result<SampleResult, SamplingError> {
    let (h, w) = check_settings(model, settings)?;
    let device = model.device().clone();
    let latent = model.latent();
    let channels = latent.channels;
    let batch = settings.batch();

    let image_tokens = (h / latent.multiple) * (w / latent.multiple);
    let mut scheduler = settings.scheduler.build_for(
        settings.steps,
        &settings.scheduler_config,
        Some(image_tokens),
    )?;
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    let shares = settings
        .scheduler
        .share_map(&settings.scheduler_config, Some(image_tokens))?;

    // A prompt: the embedded guidance scale goes in the conditioning, and true CFG with the
    // negative prompt runs as two calls per step (FluxPipeline). Classes: the null class.
    let (cond, null, cfg_scale, separate) = match (&settings.prompt, latent.classes) {
        (Some(p), None) => {
            let g = model.embeds_guidance().then_some(settings.guidance);
            let text = |e: &PromptEmbeds| {
                e.conditioning(batch, g)
                    .map(Conditioning::Text)
                    .map_err(candle("prompt"))
            };
            let null = match &p.negative_embeds {
                Some(n) if p.true_cfg > 1.0 => Some(text(n)?),
                _ => None,
            };
            (text(&p.embeds)?, null, p.true_cfg, true)
        }
        _ => {
            let cond = Conditioning::classes(settings.class_labels.clone(), &device)
                .map_err(candle("labels"))?;
            let null = model
                .null_conditioning(batch)
                .map_err(candle("null conditioning"))?;
            let separate = settings.cfg_mode == CfgMode::Separate;
            (cond, Some(null), settings.guidance, separate)
        }
    };
    let use_cfg = cfg_scale > 1.0 && null.is_some();
    let null = match null {
        Some(n) if use_cfg => n,
        _ => cond.clone(),
    };
    // Batched: conditional half first, then the null conditioning, as DiTPipeline.
    let batched = if use_cfg && !separate {
        Conditioning::cat(&cond, &null).map_err(candle("labels"))?
    } else {
        cond.clone()
    };
    let separate = use_cfg && separate;

    // The loop runs in f32, or in f64 for an f64 model (the precision parity traces use).
    let work = if model.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let mut x = (noise.to_dtype(work).map_err(candle("noise"))? * scheduler.init_noise_sigma())
        .map_err(candle("scaling noise"))?;
    hook.reset();
    let mut records = Vec::with_capacity(total);
    for (i, &t) in timesteps.iter().enumerate() {
        let started = Instant::now();
        let info = |branch| CallInfo {
            step_index: i,
            total_steps: total,
            timestep: t,
            batched_cfg: use_cfg && !separate,
            branch,
            shares,
        };
        // One transformer call; returns the noise prediction (learned-sigma channels dropped).
        let mut call = |x_in: &Tensor, cond: &Conditioning, branch| {
            let n = cond.batch().map_err(candle("labels"))?;
            let t_batch = Tensor::full(t as f32, n, &device).map_err(candle("timesteps"))?;
            hook.call(model, &info(branch), x_in, &t_batch, cond)
                .map_err(candle("transformer call"))?
                .to_dtype(work)
                .map_err(candle("model output"))?
                .narrow(1, 0, channels)
                .map_err(candle("learned-sigma split"))
        };
        let (cond, uncond) = if separate {
            let x_in = scheduler
                .scale_model_input(&x, i)
                .map_err(candle("scale_model_input"))?;
            let cond = call(&x_in, &cond, CfgBranch::Cond)?;
            let uncond = call(&x_in, &null, CfgBranch::Uncond)?;
            (cond, Some(uncond))
        } else if use_cfg {
            let model_in = Tensor::cat(&[&x, &x], 0).map_err(candle("CFG batch"))?;
            let model_in = scheduler
                .scale_model_input(&model_in, i)
                .map_err(candle("scale_model_input"))?;
            let eps = call(&model_in, &batched, CfgBranch::Batched)?;
            let cond = eps.narrow(0, 0, batch).map_err(candle("CFG split"))?;
            let uncond = eps.narrow(0, batch, batch).map_err(candle("CFG split"))?;
            (cond, Some(uncond))
        } else {
            let x_in = scheduler
                .scale_model_input(&x, i)
                .map_err(candle("scale_model_input"))?;
            (call(&x_in, &batched, CfgBranch::Batched)?, None)
        };
        let eps = match uncond {
            Some(uncond) => {
                let delta = ((cond - &uncond).map_err(candle("guidance"))? * cfg_scale)
                    .map_err(candle("guidance"))?;
                (uncond + delta).map_err(candle("guidance"))?
            }
            None => cond,
        };
        x = scheduler
            .step(&eps, i, &x)
            .map_err(candle("scheduler step"))?;
        // Time the step honestly on asynchronous devices.
        device.synchronize().map_err(candle("device sync"))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        records.push(StepRecord {
            index: i,
            timestep: t,
            ms,
        });
        // Outside the timed part: a preview never counts in a step's time.
        let preview = preview.preview(i, total, &x);
        let progress = StepProgress {
            index: i,
            total,
            timestep: t,
            ms,
            calls: hook.drain_records(),
            preview,
        };
        if on_step(&progress) == Flow::Stop {
            return Err(SamplingError::Cancelled);
        }
    }
    Ok(SampleResult {
        sample: x,
        steps: records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::hook::PlainForward;
    use crate::models::builtin::load_model;
    use crate::models::AnyModel;

    #[test]
    fn first_and_last_steps_carry_a_preview_and_the_last_is_the_final_image() {
        let model = load_model("random-tiny", "f32", "cpu").expect("built-in model");
        let s = SampleSettings {
            class_labels: vec![1, 2],
            prompt: None,
            seed: 5,
            steps: 3,
            guidance: 1.0,
            cfg_mode: CfgMode::Batched,
            scheduler: SchedulerKind::DpmSolverMultistep,
            scheduler_config: SchedulerConfig::default(),
            size: None,
        };
        let noise = initial_noise(&model.model, &s, &Device::Cpu).expect("noise");
        let mut previews = Vec::new();
        let out = denoise::<AnyModel>(
            &model.model,
            &s,
            &noise,
            &mut PlainForward::default(),
            &mut |p| {
                previews.push(p.preview.clone());
                Flow::Continue
            },
        )
        .expect("sampling");
        assert_eq!(previews.len(), 3);
        assert!(previews[0].is_some(), "the first step always has a preview");
        let last = previews[2]
            .clone()
            .expect("the last step always has a preview");
        let images = image_from_tensor(&out.sample).expect("final image");
        assert_eq!(images.len(), 2);
        assert_eq!(
            *last, images[0],
            "the last preview is the batch's first final image"
        );
    }
}
