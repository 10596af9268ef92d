//! The DiT transformer (diffusers' `DiTTransformer2DModel`), exposed block by block so the step
//! cache can run some blocks and skip others: `embed` → `block(i)` … → `finish`.

use super::block::{modulate, BlockDims, DiTBlock, Kernels, PlainLayerNorm};
use super::config::DiTConfig;
use super::embeddings::{timestep_projection, PatchEmbed};
use crate::models::blocks::{
    attention_share, AttentionHook, BlockAt, BlockList, BlockTransformer, Conditioning, LatentSpec,
    StreamPattern, Streams,
};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// What one call computes once and every block reads: the contract's `Call` for DiT.
#[derive(Debug, Clone)]
pub struct DiTCall {
    /// Timestep projection `[B, 256]` in the model dtype (shared by every block's embedder).
    t_proj: Tensor,
    /// Class labels `[B]` (u32); the null class is `num_classes`.
    labels: Tensor,
    /// Token grid (rows, cols).
    grid: (usize, usize),
}

/// What flows between blocks: the tokens plus the per-call conditioning inputs.
#[derive(Debug, Clone)]
pub struct DiTState {
    /// Tokens `[B, N, hidden]`.
    pub hidden: Tensor,
    call: DiTCall,
}

impl DiTState {
    /// The same call with other tokens (e.g. after adding a cached residual).
    pub fn with_hidden(&self, hidden: Tensor) -> DiTState {
        DiTState {
            hidden,
            call: self.call.clone(),
        }
    }

    pub fn grid(&self) -> (usize, usize) {
        self.call.grid
    }
}

#[derive(Debug, Clone)]
pub struct DiT {
    config: DiTConfig,
    patch_embed: PatchEmbed,
    blocks: Vec<DiTBlock>,
    norm_out: PlainLayerNorm,
    proj_out_1: Linear,
    proj_out_2: Linear,
    /// One list: `transformer_blocks`, image tokens only.
    lists: [BlockList; 1],
    dtype: DType,
    device: Device,
}

impl DiT {
    /// Builds the model from tensors named as in a diffusers checkpoint.
    pub fn new(config: &DiTConfig, vb: VarBuilder) -> Result<Self> {
        config.check().map_err(candle_core::Error::msg)?;
        let hidden = config.hidden_size();
        let dims = BlockDims {
            hidden,
            heads: config.num_attention_heads,
            head_dim: config.attention_head_dim,
            num_classes: config.num_classes(),
            attention_bias: config.attention_bias,
            norm_eps: config.norm_eps,
        };
        let blocks = (0..config.num_layers)
            .map(|i| DiTBlock::new(vb.pp(format!("transformer_blocks.{i}")), dims))
            .collect::<Result<Vec<_>>>()?;
        let patch = config.patch_size;
        Ok(DiT {
            patch_embed: PatchEmbed::new(
                vb.pp("pos_embed"),
                config.in_channels,
                hidden,
                patch,
                config.sample_size,
            )?,
            blocks,
            norm_out: PlainLayerNorm::new(hidden, 1e-6, vb.dtype(), vb.device())?,
            proj_out_1: candle_nn::linear(hidden, 2 * hidden, vb.pp("proj_out_1"))?,
            proj_out_2: candle_nn::linear(
                hidden,
                patch * patch * config.out_channels(),
                vb.pp("proj_out_2"),
            )?,
            lists: [BlockList {
                name: "transformer_blocks",
                len: config.num_layers,
                pattern: StreamPattern::Hidden,
            }],
            dtype: vb.dtype(),
            device: vb.device().clone(),
            config: config.clone(),
        })
    }

    /// Switches every norm and softmax, and the patch embedding, to `kernels`; training needs `Kernels::Differentiable`.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        for block in &mut self.blocks {
            block.set_kernels(kernels);
        }
        self.norm_out = self.norm_out.clone().with_kernels(kernels);
        self.patch_embed.kernels = kernels;
    }

    pub fn config(&self) -> &DiTConfig {
        &self.config
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Patch + position embedding and the conditioning inputs.
    /// `x`: `[B, C, H, W]` (H, W multiples of the patch size); `timesteps`: `[B]` (any float
    /// or int dtype; fractional values are fine); `labels`: `[B]` integer class ids.
    pub fn embed(&self, x: &Tensor, timesteps: &Tensor, labels: &Tensor) -> Result<DiTState> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.config.patch_size;
        if c != self.config.in_channels || h % p != 0 || w % p != 0 {
            candle_core::bail!(
                "DiT input {:?}: expected {} channels and sides that are multiples of {p}",
                x.dims(),
                self.config.in_channels
            );
        }
        if timesteps.dims1()? != b || labels.dims1()? != b {
            candle_core::bail!("DiT: timesteps and labels need one entry per batch item ({b})");
        }
        let hidden = self.patch_embed.forward(&x.to_dtype(self.dtype)?)?;
        let t_proj = timestep_projection(timesteps)?.to_dtype(self.dtype)?;
        Ok(DiTState {
            hidden,
            call: DiTCall {
                t_proj,
                labels: labels.to_dtype(DType::U32)?,
                grid: (h / p, w / p),
            },
        })
    }

    /// Runs block `i` on the state's tokens and returns the new tokens.
    pub fn block(&self, i: usize, state: &DiTState) -> Result<Tensor> {
        self.run_block(i, &state.hidden, &state.call)
    }

    fn run_block(&self, i: usize, hidden: &Tensor, call: &DiTCall) -> Result<Tensor> {
        let block = self
            .blocks
            .get(i)
            .ok_or_else(|| candle_core::Error::msg(format!("DiT has no block {i}")))?;
        block.forward(hidden, &call.t_proj, &call.labels)
    }

    /// Final adaLN modulation, projection and unpatchify: `[B, out_channels, H, W]`.
    pub fn finish(&self, state: &DiTState) -> Result<Tensor> {
        self.head(&state.hidden, &state.call)
    }

    fn head(&self, hidden: &Tensor, call: &DiTCall) -> Result<Tensor> {
        let first = self
            .blocks
            .first()
            .ok_or_else(|| candle_core::Error::msg("DiT has no blocks"))?;
        // diffusers takes the output conditioning from block 0's embedder.
        let cond = first.emb.forward(&call.t_proj, &call.labels)?;
        let mods = self.proj_out_1.forward(&cond.silu()?)?;
        let p = self.config.patch_size;
        let c = self.config.out_channels();
        if super::cpu_io::applies(hidden) && self.norm_out.kernels == Kernels::Fused {
            return super::cpu_io::head(
                hidden,
                &mods,
                self.norm_out.eps,
                &self.proj_out_2,
                call.grid,
                p,
                c,
            );
        }
        let mods = mods.chunk(2, D::Minus1)?;
        let (shift, scale) = (&mods[0], &mods[1]);
        let x = modulate(&self.norm_out.forward(hidden)?, shift, scale)?;
        let x = self.proj_out_2.forward(&x)?;
        let (b, _, _) = x.dims3()?;
        let (h, w) = call.grid;
        // "nhwpqc -> nchpwq"
        x.reshape((b, h, w, p, p, c))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((b, c, h * p, w * p))
    }

    /// The plain forward: embed, every block in order, finish.
    pub fn forward(&self, x: &Tensor, timesteps: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let mut state = self.embed(x, timesteps, labels)?;
        for i in 0..self.blocks.len() {
            let hidden = self.block(i, &state)?;
            state = state.with_hidden(hidden);
        }
        self.finish(&state)
    }
}

/// DiT on the block contract: one image-only list, `transformer_blocks`.
impl BlockTransformer for DiT {
    type Call = DiTCall;

    fn block_lists(&self) -> &[BlockList] {
        &self.lists
    }

    fn latent(&self) -> LatentSpec {
        let c = &self.config;
        LatentSpec {
            channels: c.in_channels,
            sample_size: (c.sample_size, c.sample_size),
            multiple: c.patch_size,
            classes: Some(c.num_classes()),
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
    ) -> Result<(Streams, DiTCall)> {
        let Conditioning::Class(labels) = cond else {
            candle_core::bail!("DiT is class-conditional: it takes class labels, not a prompt")
        };
        let state = DiT::embed(self, x, timesteps, labels)?;
        Ok((Streams::image(state.hidden), state.call))
    }

    fn block(&self, at: BlockAt, streams: &Streams, call: &DiTCall) -> Result<Streams> {
        Ok(Streams {
            hidden: self.run_block(at.index, &streams.hidden, call)?,
            encoder: streams.encoder.clone(),
        })
    }

    fn finish(&self, streams: &Streams, call: &DiTCall) -> Result<Tensor> {
        self.head(&streams.hidden, call)
    }

    fn null_conditioning(&self, batch: usize) -> Result<Conditioning> {
        Conditioning::classes(vec![self.config.num_classes() as u32; batch], &self.device)
    }

    fn block_with_attention(
        &self,
        at: BlockAt,
        streams: &Streams,
        call: &DiTCall,
        hook: &mut dyn AttentionHook,
    ) -> Result<Option<Streams>> {
        let block = self
            .blocks
            .get(at.index)
            .ok_or_else(|| candle_core::Error::msg(format!("DiT has no block {}", at.index)))?;
        Ok(Some(Streams {
            hidden: block.forward_with(
                &streams.hidden,
                &call.t_proj,
                &call.labels,
                Some((hook, at)),
            )?,
            encoder: streams.encoder.clone(),
        }))
    }

    /// DiT's blocks see no positions (the position embedding is added before them), so any
    /// subset of tokens runs with the same call.
    fn restrict_tokens(&self, call: &DiTCall, _image_tokens: &Tensor) -> Result<Option<DiTCall>> {
        Ok(Some(call.clone()))
    }

    /// `attn1` with its projections against the whole block (the feed-forward's 8·d²).
    fn attention_share(&self, _at: BlockAt, streams: &Streams) -> f64 {
        let tokens = streams.hidden.dim(1).unwrap_or(0);
        attention_share(tokens, self.config.hidden_size(), 4.0, 8.0)
    }

    /// Block 0's adaLN-modulated input (TeaCache's indicator).
    fn modulated_input(&self, streams: &Streams, call: &DiTCall) -> Result<Option<Tensor>> {
        match self.blocks.first() {
            Some(b) => Ok(Some(b.modulated_input(
                &streams.hidden,
                &call.t_proj,
                &call.labels,
            )?)),
            None => Ok(None),
        }
    }
}
