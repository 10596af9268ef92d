//! Model architectures (DiT, FLUX.1) and loading them from checkpoint folders or built-in names.
//! [`AnyModel`] is the one place that dispatches over model families; everything else is
//! generic over the block contract ([`blocks::BlockTransformer`]).

pub mod blocks;
pub mod builtin;
pub mod device;
pub mod dit;
pub mod flux;
pub mod loading;
pub mod pytorch;
pub mod text;
pub mod two_list;
pub mod vae;

use crate::schedulers::{SchedulerConfig, SchedulerConfigError};
use blocks::{
    AttentionHook, BlockAt, BlockList, BlockTransformer, Conditioning, LatentSpec, Streams,
};
use candle_core::{DType, Device, Tensor};

/// A model of any supported family.
#[derive(Debug, Clone)]
pub enum AnyModel {
    Dit(dit::DiT),
    Flux(flux::Flux),
}

/// The per-call state of whichever family runs.
#[derive(Debug, Clone)]
pub enum AnyCall {
    Dit(dit::DiTCall),
    Flux(flux::FluxCall),
}

impl AnyModel {
    /// The family's name, for messages.
    pub fn family(&self) -> &'static str {
        match self {
            AnyModel::Dit(_) => "DiT",
            AnyModel::Flux(m) if m.config().guidance_embeds => "FLUX.1-dev",
            AnyModel::Flux(_) => "FLUX.1-schnell",
        }
    }

    /// The DiT, for the work only a DiT does (training, the DiT benchmarks).
    pub fn as_dit(&self) -> Option<&dit::DiT> {
        match self {
            AnyModel::Dit(m) => Some(m),
            AnyModel::Flux(_) => None,
        }
    }

    /// Blocks over every list.
    pub fn num_blocks(&self) -> usize {
        blocks::total_blocks(self.block_lists())
    }
}

impl BlockTransformer for AnyModel {
    type Call = AnyCall;

    fn block_lists(&self) -> &[BlockList] {
        match self {
            AnyModel::Dit(m) => m.block_lists(),
            AnyModel::Flux(m) => m.block_lists(),
        }
    }

    fn latent(&self) -> LatentSpec {
        match self {
            AnyModel::Dit(m) => m.latent(),
            AnyModel::Flux(m) => m.latent(),
        }
    }

    fn device(&self) -> &Device {
        match self {
            AnyModel::Dit(m) => BlockTransformer::device(m),
            AnyModel::Flux(m) => BlockTransformer::device(m),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            AnyModel::Dit(m) => BlockTransformer::dtype(m),
            AnyModel::Flux(m) => BlockTransformer::dtype(m),
        }
    }

    fn embed(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> candle_core::Result<(Streams, AnyCall)> {
        match self {
            AnyModel::Dit(m) => {
                let (s, c) = BlockTransformer::embed(m, x, timesteps, cond)?;
                Ok((s, AnyCall::Dit(c)))
            }
            AnyModel::Flux(m) => {
                let (s, c) = BlockTransformer::embed(m, x, timesteps, cond)?;
                Ok((s, AnyCall::Flux(c)))
            }
        }
    }

    fn block(
        &self,
        at: BlockAt,
        streams: &Streams,
        call: &AnyCall,
    ) -> candle_core::Result<Streams> {
        match (self, call) {
            (AnyModel::Dit(m), AnyCall::Dit(c)) => BlockTransformer::block(m, at, streams, c),
            (AnyModel::Flux(m), AnyCall::Flux(c)) => BlockTransformer::block(m, at, streams, c),
            _ => Err(mismatched_call()),
        }
    }

    fn block_with_attention(
        &self,
        at: BlockAt,
        streams: &Streams,
        call: &AnyCall,
        hook: &mut dyn AttentionHook,
    ) -> candle_core::Result<Option<Streams>> {
        match (self, call) {
            (AnyModel::Dit(m), AnyCall::Dit(c)) => m.block_with_attention(at, streams, c, hook),
            (AnyModel::Flux(m), AnyCall::Flux(c)) => m.block_with_attention(at, streams, c, hook),
            _ => Err(mismatched_call()),
        }
    }

    fn restrict_tokens(
        &self,
        call: &AnyCall,
        image_tokens: &Tensor,
    ) -> candle_core::Result<Option<AnyCall>> {
        Ok(match (self, call) {
            (AnyModel::Dit(m), AnyCall::Dit(c)) => {
                m.restrict_tokens(c, image_tokens)?.map(AnyCall::Dit)
            }
            (AnyModel::Flux(m), AnyCall::Flux(c)) => {
                m.restrict_tokens(c, image_tokens)?.map(AnyCall::Flux)
            }
            _ => return Err(mismatched_call()),
        })
    }

    fn attention_share(&self, at: BlockAt, streams: &Streams) -> f64 {
        match self {
            AnyModel::Dit(m) => m.attention_share(at, streams),
            AnyModel::Flux(m) => m.attention_share(at, streams),
        }
    }

    fn finish(&self, streams: &Streams, call: &AnyCall) -> candle_core::Result<Tensor> {
        match (self, call) {
            (AnyModel::Dit(m), AnyCall::Dit(c)) => BlockTransformer::finish(m, streams, c),
            (AnyModel::Flux(m), AnyCall::Flux(c)) => BlockTransformer::finish(m, streams, c),
            _ => Err(mismatched_call()),
        }
    }

    fn null_conditioning(&self, batch: usize) -> candle_core::Result<Conditioning> {
        match self {
            AnyModel::Dit(m) => m.null_conditioning(batch),
            AnyModel::Flux(m) => m.null_conditioning(batch),
        }
    }

    fn rescale_coefficients(&self) -> Option<&'static [f64]> {
        match self {
            AnyModel::Dit(m) => m.rescale_coefficients(),
            AnyModel::Flux(m) => m.rescale_coefficients(),
        }
    }

    fn mag_ratios(&self) -> Option<&'static [f64]> {
        match self {
            AnyModel::Dit(m) => m.mag_ratios(),
            AnyModel::Flux(m) => m.mag_ratios(),
        }
    }

    fn embeds_guidance(&self) -> bool {
        match self {
            AnyModel::Dit(m) => m.embeds_guidance(),
            AnyModel::Flux(m) => m.embeds_guidance(),
        }
    }

    fn modulated_input(
        &self,
        streams: &Streams,
        call: &AnyCall,
    ) -> candle_core::Result<Option<Tensor>> {
        match (self, call) {
            (AnyModel::Dit(m), AnyCall::Dit(c)) => m.modulated_input(streams, c),
            (AnyModel::Flux(m), AnyCall::Flux(c)) => m.modulated_input(streams, c),
            _ => Err(mismatched_call()),
        }
    }
}

/// A call state handed to another family's model: a bug, reported rather than panicking.
fn mismatched_call() -> candle_core::Error {
    candle_core::Error::msg("a call state of one model family was given to another")
}

/// A loaded model, shared between nodes (node reuse keeps it across runs).
#[derive(Debug)]
pub struct LoadedModel {
    /// Built-in name or folder, as the user gave it.
    pub name: String,
    pub model: AnyModel,
    /// The pipeline's VAE (`vae/` beside `transformer/`): final images are decoded with it.
    pub vae: Option<std::sync::Arc<vae::Vae>>,
    /// The pipeline's text encoders (FLUX.1), for the prompt.
    pub text: Option<std::sync::Arc<text::PromptEncoder>>,
    pub device: Device,
    pub dtype: DType,
    /// The scheduler fields the Sampler builds its scheduler class from: the pipeline's
    /// `scheduler/scheduler_config.json` (its path is `scheduler_config.source()`), or DiT's
    /// default config for built-in models and plain checkpoints (`source()` is `None`).
    pub scheduler_config: SchedulerConfig,
}

impl LoadedModel {
    /// The final images of a sample: decoded by the VAE when the model has one (tiled when
    /// larger than one VAE tile), else the pixels, or the latent preview of a latent model.
    pub fn images(
        &self,
        sample: &Tensor,
    ) -> Result<Vec<crate::image::RgbImage>, crate::image::ImageError> {
        vae::images_of(self.vae.as_deref(), sample)
    }

    /// One line on what was loaded, for the Load Model node.
    pub fn summary(&self) -> String {
        let lists: Vec<String> = self
            .model
            .block_lists()
            .iter()
            .map(|l| format!("{} × {}", l.len, l.name))
            .collect();
        let latent = self.model.latent();
        let mut text = format!(
            "{}: {} ({} channels, {}×{})",
            self.model.family(),
            lists.join(" + "),
            latent.channels,
            latent.sample_size.0,
            latent.sample_size.1
        );
        if let Some(vae) = &self.vae {
            let c = vae.config();
            text.push_str(&format!(
                "; VAE: {} latent channels, ×{} to {} RGB, scaling {}{}",
                c.latent_channels,
                c.downscale(),
                c.out_channels,
                c.scaling_factor,
                c.shift_factor
                    .map_or(String::new(), |s| format!(", shift {s}"))
            ));
        }
        text.push_str(&format!(
            "; holds {} of weights ({:?} on {})",
            crate::memory::show_bytes(self.weight_bytes()),
            self.dtype,
            if self.device.is_cpu() { "cpu" } else { "cuda" }
        ));
        text
    }

    /// Bytes of weights held: the transformer's and the VAE's.
    pub fn weight_bytes(&self) -> u64 {
        let transformer = match &self.model {
            AnyModel::Dit(m) => m
                .config()
                .weight_count()
                .unwrap_or(0)
                .saturating_mul(self.dtype.size_in_bytes() as u64),
            AnyModel::Flux(m) => m
                .config()
                .weight_count()
                .unwrap_or(0)
                .saturating_mul(self.dtype.size_in_bytes() as u64),
        };
        transformer + self.vae.as_ref().map_or(0, |v| v.weight_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    SchedulerConfig(#[from] SchedulerConfigError),
    #[error("unknown built-in model {name:?}; built-in models: {known}")]
    UnknownBuiltin { name: String, known: String },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

impl ModelError {
    pub fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
        let context = context.into();
        move |source| ModelError::Candle { context, source }
    }
}
