//! One DiT transformer block: diffusers' `BasicTransformerBlock` with `norm_type="ada_norm_zero"`
//! (adaLN-Zero self-attention + tanh-GELU feed-forward), including its own conditioning embedder.

use super::embeddings::TimestepLabelEmbedding;
use super::grad_ops;
use crate::models::blocks::{AttentionHook, AttentionOutput, BlockAt};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// Which kernels the model runs: candle's fused inference ops, or composed ops that define a
/// backward pass (candle's fused `layer_norm` and `softmax_last_dim` have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    #[default]
    Fused,
    Differentiable,
}

/// LayerNorm without affine params over the last dim (diffusers uses `elementwise_affine=False`).
#[derive(Debug, Clone)]
pub struct PlainLayerNorm {
    ones: Tensor,
    zeros: Tensor,
    pub(super) eps: f32,
    pub(super) kernels: Kernels,
}

impl PlainLayerNorm {
    pub fn new(
        hidden: usize,
        eps: f64,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Self> {
        Ok(PlainLayerNorm {
            ones: Tensor::ones(hidden, dtype, device)?,
            zeros: Tensor::zeros(hidden, dtype, device)?,
            eps: eps as f32,
            kernels: Kernels::Fused,
        })
    }

    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernels {
            // candle's fused layer norm has no f64 kernel; the composed one is exact enough
            // for the f64 parity runs.
            Kernels::Fused if x.dtype() != DType::F64 => {
                candle_nn::ops::layer_norm(&x.contiguous()?, &self.ones, &self.zeros, self.eps)
            }
            Kernels::Fused | Kernels::Differentiable => grad_ops::layer_norm_train(x, self.eps),
        }
    }
}

/// `x · (1 + scale) + shift`, with `scale`/`shift` `[B, hidden]` broadcast over tokens.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// Multi-head self-attention (diffusers `Attention` with the default processor).
#[derive(Debug, Clone)]
pub(super) struct SelfAttention {
    pub(super) to_q: Linear,
    pub(super) to_k: Linear,
    pub(super) to_v: Linear,
    pub(super) to_out: Linear,
    pub(super) heads: usize,
    pub(super) head_dim: usize,
    pub(super) kernels: Kernels,
}

impl SelfAttention {
    fn new(
        vb: VarBuilder,
        hidden: usize,
        heads: usize,
        head_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let lin = |name: &str, b: bool| -> Result<Linear> {
            if b {
                candle_nn::linear(hidden, hidden, vb.pp(name))
            } else {
                candle_nn::linear_no_bias(hidden, hidden, vb.pp(name))
            }
        };
        Ok(SelfAttention {
            to_q: lin("to_q", bias)?,
            to_k: lin("to_k", bias)?,
            to_v: lin("to_v", bias)?,
            to_out: lin("to_out.0", true)?,
            heads,
            head_dim,
            kernels: Kernels::Fused,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.to_q.forward(x)?)?;
        let k = split(self.to_k.forward(x)?)?;
        let v = split(self.to_v.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let weights = match self.kernels {
            Kernels::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            Kernels::Differentiable => grad_ops::softmax_train(&scores)?,
        };
        let out =
            weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, n, self.heads * self.head_dim))?;
        self.to_out.forward(&out)
    }
}

/// diffusers' `FeedForward` with `activation_fn="gelu-approximate"`: `net.0.proj` → tanh-GELU → `net.2`.
#[derive(Debug, Clone)]
pub(super) struct FeedForward {
    pub(super) proj_in: Linear,
    pub(super) proj_out: Linear,
    kernels: Kernels,
}

impl FeedForward {
    fn new(vb: VarBuilder, hidden: usize) -> Result<Self> {
        let inner = 4 * hidden;
        Ok(FeedForward {
            proj_in: candle_nn::linear(hidden, inner, vb.pp("net.0.proj"))?,
            proj_out: candle_nn::linear(inner, hidden, vb.pp("net.2"))?,
            kernels: Kernels::Fused,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's `gelu` is the tanh approximation, as torch's GELU(approximate="tanh").
        let h = self.proj_in.forward(x)?;
        let h = match self.kernels {
            Kernels::Fused => h.gelu()?,
            Kernels::Differentiable => grad_ops::gelu_train(&h)?,
        };
        self.proj_out.forward(&h)
    }
}

/// Sizes a block needs at construction.
#[derive(Debug, Clone, Copy)]
pub struct BlockDims {
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub num_classes: usize,
    pub attention_bias: bool,
    pub norm_eps: f64,
}

/// One adaLN-Zero transformer block (`transformer_blocks.{i}` in a diffusers checkpoint).
#[derive(Debug, Clone)]
pub struct DiTBlock {
    /// `norm1.emb`: each block carries its own timestep+label embedder, as in diffusers.
    pub(crate) emb: TimestepLabelEmbedding,
    /// `norm1.linear`: conditioning → 6 modulation vectors.
    ada_linear: Linear,
    pub(super) norm1: PlainLayerNorm,
    pub(super) attn: SelfAttention,
    pub(super) norm3: PlainLayerNorm,
    pub(super) ff: FeedForward,
}

impl DiTBlock {
    pub fn new(vb: VarBuilder, dims: BlockDims) -> Result<Self> {
        let hidden = dims.hidden;
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        Ok(DiTBlock {
            emb: TimestepLabelEmbedding::new(vb.pp("norm1.emb"), dims.num_classes, hidden)?,
            ada_linear: candle_nn::linear(hidden, 6 * hidden, vb.pp("norm1.linear"))?,
            // AdaLayerNormZero's own norm has eps 1e-6; norm3 uses the config's norm_eps.
            norm1: PlainLayerNorm::new(hidden, 1e-6, dtype, &device)?,
            attn: SelfAttention::new(
                vb.pp("attn1"),
                hidden,
                dims.heads,
                dims.head_dim,
                dims.attention_bias,
            )?,
            norm3: PlainLayerNorm::new(hidden, dims.norm_eps, dtype, &device)?,
            ff: FeedForward::new(vb.pp("ff"), hidden)?,
        })
    }

    /// Switches the block's norms and attention softmax to `kernels`.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.norm1 = self.norm1.clone().with_kernels(kernels);
        self.norm3 = self.norm3.clone().with_kernels(kernels);
        self.attn.kernels = kernels;
        self.ff.kernels = kernels;
    }

    /// The block's modulated input, `norm1(x)·(1 + scale_msa) + shift_msa`: what TeaCache
    /// reads (as its FLUX and Mochi scripts read block 0's `norm1` output).
    pub fn modulated_input(&self, x: &Tensor, t_proj: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let cond = self.emb.forward(t_proj, labels)?;
        let mods = self
            .ada_linear
            .forward(&cond.silu()?)?
            .chunk(6, D::Minus1)?;
        modulate(&self.norm1.forward(x)?, &mods[0], &mods[1])
    }

    /// `x`: tokens `[B, N, hidden]`; `t_proj`: `[B, 256]` timestep projection in the model
    /// dtype; `labels`: `[B]` u32. Returns the new tokens.
    pub fn forward(&self, x: &Tensor, t_proj: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.forward_with(x, t_proj, labels, None)
    }

    /// [`DiTBlock::forward`] with `hook` around the attention module (`attn1` and its output
    /// projection; what attention-level caching stores).
    pub fn forward_with(
        &self,
        x: &Tensor,
        t_proj: &Tensor,
        labels: &Tensor,
        hook: Option<(&mut dyn AttentionHook, BlockAt)>,
    ) -> Result<Tensor> {
        let mods = self.modulation(t_proj, labels)?;
        if super::cpu_block::applies(self, x) {
            return super::cpu_block::forward(self, x, &mods, hook, crate::kernels::threads());
        }
        self.forward_composed(x, &mods, hook)
    }

    /// The six adaLN modulation vectors `[B, 6·hidden]` for this call's conditioning.
    pub(super) fn modulation(&self, t_proj: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let cond = self.emb.forward(t_proj, labels)?;
        self.ada_linear.forward(&cond.silu()?)
    }

    /// The block from candle's ops (any device and dtype; the reference the CPU kernels are
    /// tested against).
    pub(super) fn forward_composed(
        &self,
        x: &Tensor,
        mods: &Tensor,
        hook: Option<(&mut dyn AttentionHook, BlockAt)>,
    ) -> Result<Tensor> {
        let mods = mods.chunk(6, D::Minus1)?;
        let (shift_msa, scale_msa, gate_msa) = (&mods[0], &mods[1], &mods[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&mods[3], &mods[4], &mods[5]);

        let h = modulate(&self.norm1.forward(x)?, shift_msa, scale_msa)?;
        let attn = match hook {
            Some((hook, at)) => {
                hook.attention(at, &mut || {
                    Ok(AttentionOutput::image(self.attn.forward(&h)?))
                })?
                .hidden
            }
            None => self.attn.forward(&h)?,
        };
        let x = (x + attn.broadcast_mul(&gate_msa.unsqueeze(1)?)?)?;

        let h = modulate(&self.norm3.forward(&x)?, shift_mlp, scale_mlp)?;
        let ff = self.ff.forward(&h)?;
        x + ff.broadcast_mul(&gate_mlp.unsqueeze(1)?)?
    }
}
