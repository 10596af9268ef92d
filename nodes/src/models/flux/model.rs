//! The FLUX.1 transformer (diffusers' `FluxTransformer2DModel`) on the block contract: embed
//! packs the `[B, 16, H, W]` latent into 2×2 tokens and builds the conditioning and RoPE tables,
//! the dual-stream then the single-stream blocks run as two `Joint` lists, and finish projects
//! and unpacks. Tensor names mirror the checkpoint.

use super::block::{DoubleBlock, SingleBlock};
use super::config::FluxConfig;
use super::embeddings::{position_ids, rope_tables, RopeTables, TimeTextEmbedding};
use crate::models::blocks::{
    attention_share, AttentionHook, BlockAt, BlockList, BlockTransformer, Conditioning, LatentSpec,
    StreamPattern, Streams,
};
use crate::models::dit::block::{modulate, PlainLayerNorm};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// TeaCache's rescale polynomial for FLUX.1-dev, highest power first (TeaCache4FLUX,
/// ALGORITHMS.md §3.3).
pub const TEACACHE_COEFFICIENTS: [f64; 5] = [
    4.98651651e+02,
    -2.83781631e+02,
    5.58554382e+01,
    -3.82021401e+00,
    2.64230861e-01,
];

/// MagCache's magnitude ratios for FLUX.1 over 28 steps (diffusers `FLUX_MAG_RATIOS`).
pub const MAG_RATIOS: [f64; 28] = [
    1.0, 1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344,
    0.98047, 1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047,
    0.98828, 0.96484, 0.95703, 0.93359, 0.89062,
];

/// FLUX.1's native size: 1024² pixels, a 128² latent.
const NATIVE_LATENT: usize = 128;

/// What one call computes once and every block reads.
#[derive(Debug, Clone)]
pub struct FluxCall {
    /// The conditioning `[B, dim]` (timestep + guidance + pooled text).
    temb: Tensor,
    rope: RopeTables,
    /// Latent size (height, width) to unpack to.
    latent: (usize, usize),
}

impl FluxCall {
    /// The conditioning every block is modulated by (`time_text_embed`'s output).
    pub fn temb(&self) -> &Tensor {
        &self.temb
    }

    /// The rotary tables of the text + image positions (`pos_embed`'s output).
    pub fn rope(&self) -> &RopeTables {
        &self.rope
    }
}

#[derive(Debug, Clone)]
pub struct Flux {
    config: FluxConfig,
    x_embedder: Linear,
    context_embedder: Linear,
    time_text_embed: TimeTextEmbedding,
    double: Vec<DoubleBlock>,
    single: Vec<SingleBlock>,
    norm_out_linear: Linear,
    norm_out: PlainLayerNorm,
    proj_out: Linear,
    lists: [BlockList; 2],
    dtype: DType,
    device: Device,
}

/// `[B, C, H, W]` → `[B, (H/2)(W/2), 4C]` (FluxPipeline's `_pack_latents`).
pub fn pack(latent: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = latent.dims4()?;
    latent
        .reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, (h / 2) * (w / 2), c * 4))
}

/// The inverse of [`pack`] (`_unpack_latents`): tokens `[B, N, 4C]` → `[B, C, H, W]`.
pub fn unpack(tokens: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, d) = tokens.dims3()?;
    tokens
        .reshape((b, h / 2, w / 2, d / 4, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, d / 4, h, w))
}

impl Flux {
    /// Builds the model from tensors named as in a diffusers checkpoint.
    pub fn new(config: &FluxConfig, vb: VarBuilder) -> Result<Self> {
        config.check().map_err(candle_core::Error::msg)?;
        let dim = config.inner_dim();
        let heads = config.num_attention_heads;
        let double = (0..config.num_layers)
            .map(|i| DoubleBlock::new(vb.pp(format!("transformer_blocks.{i}")), dim, heads))
            .collect::<Result<Vec<_>>>()?;
        let single = (0..config.num_single_layers)
            .map(|i| SingleBlock::new(vb.pp(format!("single_transformer_blocks.{i}")), dim, heads))
            .collect::<Result<Vec<_>>>()?;
        Ok(Flux {
            x_embedder: candle_nn::linear(config.in_channels, dim, vb.pp("x_embedder"))?,
            context_embedder: candle_nn::linear(
                config.joint_attention_dim,
                dim,
                vb.pp("context_embedder"),
            )?,
            time_text_embed: TimeTextEmbedding::new(
                vb.pp("time_text_embed"),
                dim,
                config.pooled_projection_dim,
                config.guidance_embeds,
            )?,
            double,
            single,
            norm_out_linear: candle_nn::linear(dim, 2 * dim, vb.pp("norm_out.linear"))?,
            norm_out: PlainLayerNorm::new(dim, 1e-6, vb.dtype(), vb.device())?,
            proj_out: candle_nn::linear(dim, config.out_channels(), vb.pp("proj_out"))?,
            // cache-dit runs FLUX.1's two lists as one 57-block list of Pattern_1 blocks
            // (ALGORITHMS.md §1.1): both lists change both streams.
            lists: [
                BlockList {
                    name: "transformer_blocks",
                    len: config.num_layers,
                    pattern: StreamPattern::Joint,
                },
                BlockList {
                    name: "single_transformer_blocks",
                    len: config.num_single_layers,
                    pattern: StreamPattern::Joint,
                },
            ],
            dtype: vb.dtype(),
            device: vb.device().clone(),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &FluxConfig {
        &self.config
    }

    /// The transformer call on packed inputs, as diffusers' forward takes them: `hidden`
    /// `[B, N, in_channels]`, `timesteps` `[B]` divided by 1000 (as FluxPipeline passes them), text tokens and
    /// pooled embedding, guidance `[B]` (dev), the packed grid (rows, cols). Returns the
    /// packed output `[B, N, in_channels]`.
    pub fn forward_packed(
        &self,
        hidden: &Tensor,
        timesteps: &Tensor,
        text: &crate::models::blocks::TextConditioning,
        grid: (usize, usize),
    ) -> Result<Tensor> {
        let (mut streams, call) = self.embed_packed(hidden, timesteps, text, grid)?;
        for at in crate::models::blocks::run_order(&self.lists) {
            streams = self.run_block(at, &streams, &call, None)?;
        }
        self.head(&streams, &call)
    }

    /// Embeds packed inputs (see [`Flux::forward_packed`]): the streams and the call state
    /// the blocks read.
    pub fn embed_packed(
        &self,
        packed: &Tensor,
        timesteps: &Tensor,
        text: &crate::models::blocks::TextConditioning,
        grid: (usize, usize),
    ) -> Result<(Streams, FluxCall)> {
        self.embed_scaled(packed, timesteps, text, grid)
    }

    /// The packed output tokens of the head.
    pub fn head_packed(&self, streams: &Streams, call: &FluxCall) -> Result<Tensor> {
        self.head(streams, call)
    }

    fn embed_scaled(
        &self,
        packed: &Tensor,
        timesteps: &Tensor,
        text: &crate::models::blocks::TextConditioning,
        grid: (usize, usize),
    ) -> Result<(Streams, FluxCall)> {
        let hidden = self.x_embedder.forward(&packed.to_dtype(self.dtype)?)?;
        // The transformer scales the pipeline's t/1000 back by 1000 in the model dtype.
        let t = (timesteps.to_dtype(self.dtype)? * 1000.0)?;
        let guidance = match &text.guidance {
            Some(g) => Some((g.to_dtype(self.dtype)? * 1000.0)?),
            None => None,
        };
        let pooled = text.pooled.to_dtype(self.dtype)?;
        let temb = self
            .time_text_embed
            .forward(&t, guidance.as_ref(), &pooled)?;
        let encoder = self
            .context_embedder
            .forward(&text.tokens.to_dtype(self.dtype)?)?;
        let text_len = encoder.dim(1)?;
        let ids = position_ids(text_len, grid.0, grid.1);
        let rope = rope_tables(&ids, &self.config.axes_dims_rope, &self.device)?;
        Ok((
            Streams {
                hidden,
                encoder: Some(encoder),
            },
            FluxCall {
                temb,
                rope,
                latent: (grid.0 * 2, grid.1 * 2),
            },
        ))
    }

    fn run_block(
        &self,
        at: BlockAt,
        streams: &Streams,
        call: &FluxCall,
        hook: Option<&mut dyn AttentionHook>,
    ) -> Result<Streams> {
        let Some(encoder) = &streams.encoder else {
            candle_core::bail!("FLUX.1 block {at:?} needs the text stream")
        };
        let missing = || candle_core::Error::msg(format!("FLUX.1 has no block {at:?}"));
        let hook = hook.map(|h| (h, at));
        let (hidden, encoder) = match at.list {
            0 => self
                .double
                .get(at.index)
                .ok_or_else(missing)?
                .forward_with(&streams.hidden, encoder, &call.temb, &call.rope, hook)?,
            1 => self
                .single
                .get(at.index)
                .ok_or_else(missing)?
                .forward_with(&streams.hidden, encoder, &call.temb, &call.rope, hook)?,
            _ => return Err(missing()),
        };
        Ok(Streams {
            hidden,
            encoder: Some(encoder),
        })
    }

    /// `norm_out` (AdaLayerNormContinuous: scale first, then shift) and `proj_out`: packed
    /// output tokens.
    fn head(&self, streams: &Streams, call: &FluxCall) -> Result<Tensor> {
        let mods = self
            .norm_out_linear
            .forward(&call.temb.silu()?)?
            .chunk(2, D::Minus1)?;
        let (scale, shift) = (&mods[0], &mods[1]);
        let x = modulate(&self.norm_out.forward(&streams.hidden)?, shift, scale)?;
        self.proj_out.forward(&x)
    }
}

/// FLUX.1 on the block contract: `transformer_blocks` then `single_transformer_blocks`, both
/// joint.
impl BlockTransformer for Flux {
    type Call = FluxCall;

    fn block_lists(&self) -> &[BlockList] {
        &self.lists
    }

    fn latent(&self) -> LatentSpec {
        LatentSpec {
            channels: self.config.latent_channels(),
            sample_size: (NATIVE_LATENT, NATIVE_LATENT),
            multiple: 2,
            classes: None,
        }
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn embed(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<(Streams, FluxCall)> {
        let Conditioning::Text(text) = cond else {
            candle_core::bail!("FLUX.1 is text-conditioned: it takes a prompt, not class labels")
        };
        let (_, c, h, w) = x.dims4()?;
        if c != self.config.latent_channels() || h % 2 != 0 || w % 2 != 0 {
            candle_core::bail!(
                "FLUX.1 input {:?}: expected {} channels and even sides",
                x.dims(),
                self.config.latent_channels()
            );
        }
        // FluxPipeline passes t/1000 (an f32 division) and the transformer multiplies by 1000
        // again: both roundings are kept so the embedding sees the same value.
        let thousand = Tensor::new(1000f32, timesteps.device())?;
        let scaled = timesteps.to_dtype(DType::F32)?.broadcast_div(&thousand)?;
        self.embed_scaled(&pack(x)?, &scaled, text, (h / 2, w / 2))
    }

    fn block(&self, at: BlockAt, streams: &Streams, call: &FluxCall) -> Result<Streams> {
        self.run_block(at, streams, call, None)
    }

    fn block_with_attention(
        &self,
        at: BlockAt,
        streams: &Streams,
        call: &FluxCall,
        hook: &mut dyn AttentionHook,
    ) -> Result<Option<Streams>> {
        self.run_block(at, streams, call, Some(hook)).map(Some)
    }

    /// The rotary tables of the text tokens and the chosen image tokens.
    fn restrict_tokens(&self, call: &FluxCall, image_tokens: &Tensor) -> Result<Option<FluxCall>> {
        let total = call.rope.cos.dim(0)?;
        let (h, w) = call.latent;
        let text = total - (h / 2) * (w / 2);
        let text_rows = Tensor::arange(0u32, text as u32, image_tokens.device())?;
        let rows = Tensor::cat(
            &[
                &text_rows,
                &(image_tokens.to_dtype(DType::U32)? + text as f64)?,
            ],
            0,
        )?;
        Ok(Some(FluxCall {
            temb: call.temb.clone(),
            rope: RopeTables {
                cos: call.rope.cos.index_select(&rows, 0)?,
                sin: call.rope.sin.index_select(&rows, 0)?,
            },
            latent: call.latent,
        }))
    }

    /// Joint attention over text and image tokens: a double block's module holds the q/k/v
    /// and output projections of both streams (4·d²) against two feed-forwards (8·d²); a
    /// single block's holds q/k/v (3·d²) against the MLP and the wide output projection
    /// (9·d²).
    fn attention_share(&self, at: BlockAt, streams: &Streams) -> f64 {
        let text = streams
            .encoder
            .as_ref()
            .and_then(|e| e.dim(1).ok())
            .unwrap_or(0);
        let tokens = streams.hidden.dim(1).unwrap_or(0) + text;
        let dim = self.config.inner_dim();
        match at.list {
            0 => attention_share(tokens, dim, 4.0, 8.0),
            _ => attention_share(tokens, dim, 3.0, 9.0),
        }
    }

    fn finish(&self, streams: &Streams, call: &FluxCall) -> Result<Tensor> {
        let (h, w) = call.latent;
        unpack(&self.head(streams, call)?, h, w)
    }

    fn null_conditioning(&self, _batch: usize) -> Result<Conditioning> {
        candle_core::bail!(
            "FLUX.1 has no null class: true CFG needs a negative prompt, encoded by the caller"
        )
    }

    fn embeds_guidance(&self) -> bool {
        self.time_text_embed.has_guidance()
    }

    /// MagCache's ratios for FLUX.1 (28 steps), as diffusers ships them.
    fn mag_ratios(&self) -> Option<&'static [f64]> {
        Some(&MAG_RATIOS)
    }

    /// TeaCache4FLUX's polynomial (fitted on FLUX.1-dev).
    fn rescale_coefficients(&self) -> Option<&'static [f64]> {
        Some(&TEACACHE_COEFFICIENTS)
    }

    /// Block 0's `norm1` output on the image stream (TeaCache4FLUX's indicator).
    fn modulated_input(&self, streams: &Streams, call: &FluxCall) -> Result<Option<Tensor>> {
        match self.double.first() {
            Some(block) => Ok(Some(block.modulated_input(&streams.hidden, &call.temb)?)),
            None => Ok(None),
        }
    }
}
