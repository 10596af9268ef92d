//! FLUX.1 blocks as diffusers writes them: the dual-stream `FluxTransformerBlock` (image and
//! text tokens each with their own adaLN-Zero, norms and feed-forward, one joint attention) and
//! the single-stream `FluxSingleTransformerBlock` (text + image tokens as one sequence,
//! attention and MLP side by side).

use super::embeddings::{apply_rope, RopeTables};
use crate::models::blocks::{AttentionHook, AttentionOutput, BlockAt};
use crate::models::dit::block::{modulate, PlainLayerNorm};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, RmsNorm, VarBuilder};

/// Norm epsilon of every FLUX.1 norm (LayerNorm and the RMSNorm of queries and keys).
const EPS: f64 = 1e-6;

/// One stream's query/key/value projections with their RMS norms.
#[derive(Debug, Clone)]
struct Qkv {
    q: Linear,
    k: Linear,
    v: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
}

impl Qkv {
    /// `names`: the projections' and norms' names (`to_q` … or `add_q_proj` …).
    fn new(vb: &VarBuilder, dim: usize, head_dim: usize, names: [&str; 5]) -> Result<Self> {
        Ok(Qkv {
            q: candle_nn::linear(dim, dim, vb.pp(names[0]))?,
            k: candle_nn::linear(dim, dim, vb.pp(names[1]))?,
            v: candle_nn::linear(dim, dim, vb.pp(names[2]))?,
            norm_q: candle_nn::rms_norm(head_dim, EPS, vb.pp(names[3]))?,
            norm_k: candle_nn::rms_norm(head_dim, EPS, vb.pp(names[4]))?,
        })
    }

    /// `[B, S, dim]` → q, k, v as `[B, S, H, D]` (q and k normed).
    fn project(&self, x: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, dim) = x.dims3()?;
        let split = |t: Tensor| t.reshape((b, s, heads, dim / heads));
        let q = self.norm_q.forward(&split(self.q.forward(x)?)?)?;
        let k = self.norm_k.forward(&split(self.k.forward(x)?)?)?;
        let v = split(self.v.forward(x)?)?;
        Ok((q, k, v))
    }
}

/// Scaled dot-product attention with RoPE on `[B, S, H, D]` inputs; returns `[B, S, H·D]`.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rope: &RopeTables) -> Result<Tensor> {
    let (b, s, h, d) = q.dims4()?;
    let heads_first = |t: &Tensor| t.transpose(1, 2)?.contiguous();
    let q = apply_rope(&heads_first(q)?, rope)?;
    let k = apply_rope(&heads_first(k)?, rope)?;
    let v = heads_first(v)?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    weights.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h * d))
}

/// diffusers' `FeedForward(activation_fn="gelu-approximate")`: `net.0.proj` → tanh-GELU →
/// `net.2`.
#[derive(Debug, Clone)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(FeedForward {
            proj_in: candle_nn::linear(dim, 4 * dim, vb.pp("net.0.proj"))?,
            proj_out: candle_nn::linear(4 * dim, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out.forward(&self.proj_in.forward(x)?.gelu()?)
    }
}

/// `x + gate ⊙ y`, the gate `[B, dim]` broadcast over tokens.
fn gated(x: &Tensor, gate: &Tensor, y: &Tensor) -> Result<Tensor> {
    x + y.broadcast_mul(&gate.unsqueeze(1)?)?
}

/// One dual-stream block (`transformer_blocks.{i}`).
#[derive(Debug, Clone)]
pub struct DoubleBlock {
    norm1: Linear,
    norm1_context: Linear,
    image: Qkv,
    text: Qkv,
    to_out: Linear,
    to_add_out: Linear,
    ff: FeedForward,
    ff_context: FeedForward,
    norm: PlainLayerNorm,
    heads: usize,
}

impl DoubleBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let head_dim = dim / heads;
        let attn = vb.pp("attn");
        Ok(DoubleBlock {
            norm1: candle_nn::linear(dim, 6 * dim, vb.pp("norm1.linear"))?,
            norm1_context: candle_nn::linear(dim, 6 * dim, vb.pp("norm1_context.linear"))?,
            image: Qkv::new(
                &attn,
                dim,
                head_dim,
                ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
            )?,
            text: Qkv::new(
                &attn,
                dim,
                head_dim,
                [
                    "add_q_proj",
                    "add_k_proj",
                    "add_v_proj",
                    "norm_added_q",
                    "norm_added_k",
                ],
            )?,
            to_out: candle_nn::linear(dim, dim, attn.pp("to_out.0"))?,
            to_add_out: candle_nn::linear(dim, dim, attn.pp("to_add_out"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
            ff_context: FeedForward::new(vb.pp("ff_context"), dim)?,
            norm: PlainLayerNorm::new(dim, EPS, vb.dtype(), vb.device())?,
            heads,
        })
    }

    /// The image stream's modulated input (`norm1(hidden, temb)[0]`), TeaCache's indicator.
    pub fn modulated_input(&self, hidden: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let mods = self.norm1.forward(&temb.silu()?)?.chunk(6, D::Minus1)?;
        modulate(&self.norm.forward(hidden)?, &mods[0], &mods[1])
    }

    /// `(hidden, encoder)` → `(hidden, encoder)`.
    pub fn forward(
        &self,
        hidden: &Tensor,
        encoder: &Tensor,
        temb: &Tensor,
        rope: &RopeTables,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_with(hidden, encoder, temb, rope, None)
    }

    /// [`DoubleBlock::forward`] with `hook` around the attention module (`attn`: both streams'
    /// projections, the joint attention and both output projections).
    pub fn forward_with(
        &self,
        hidden: &Tensor,
        encoder: &Tensor,
        temb: &Tensor,
        rope: &RopeTables,
        hook: Option<(&mut dyn AttentionHook, BlockAt)>,
    ) -> Result<(Tensor, Tensor)> {
        let silu = temb.silu()?;
        let m = self.norm1.forward(&silu)?.chunk(6, D::Minus1)?;
        let c = self.norm1_context.forward(&silu)?.chunk(6, D::Minus1)?;
        let norm_hidden = modulate(&self.norm.forward(hidden)?, &m[0], &m[1])?;
        let norm_encoder = modulate(&self.norm.forward(encoder)?, &c[0], &c[1])?;

        let mut module = || -> Result<AttentionOutput> {
            let (q, k, v) = self.image.project(&norm_hidden, self.heads)?;
            let (eq, ek, ev) = self.text.project(&norm_encoder, self.heads)?;
            let text_len = encoder.dim(1)?;
            let q = Tensor::cat(&[&eq, &q], 1)?;
            let k = Tensor::cat(&[&ek, &k], 1)?;
            let v = Tensor::cat(&[&ev, &v], 1)?;
            let joint = attention(&q, &k, &v, rope)?;
            let total = joint.dim(1)?;
            let text_attn = self
                .to_add_out
                .forward(&joint.narrow(1, 0, text_len)?.contiguous()?)?;
            let image_attn = self
                .to_out
                .forward(&joint.narrow(1, text_len, total - text_len)?.contiguous()?)?;
            Ok(AttentionOutput {
                hidden: image_attn,
                encoder: Some(text_attn),
            })
        };
        let out = match hook {
            Some((hook, at)) => hook.attention(at, &mut module)?,
            None => module()?,
        };
        let (image_attn, Some(text_attn)) = (out.hidden, out.encoder) else {
            candle_core::bail!("FLUX.1 double block: the attention output lacks the text stream");
        };

        let hidden = gated(hidden, &m[2], &image_attn)?;
        let ff_in = modulate(&self.norm.forward(&hidden)?, &m[3], &m[4])?;
        let hidden = gated(&hidden, &m[5], &self.ff.forward(&ff_in)?)?;

        let encoder = gated(encoder, &c[2], &text_attn)?;
        let ff_in = modulate(&self.norm.forward(&encoder)?, &c[3], &c[4])?;
        let encoder = gated(&encoder, &c[5], &self.ff_context.forward(&ff_in)?)?;
        // diffusers clips only the text stream here.
        Ok((hidden, clip_f16(encoder)?))
    }
}

/// One single-stream block (`single_transformer_blocks.{i}`).
#[derive(Debug, Clone)]
pub struct SingleBlock {
    norm: Linear,
    qkv: Qkv,
    proj_mlp: Linear,
    proj_out: Linear,
    layer_norm: PlainLayerNorm,
    heads: usize,
}

impl SingleBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        let mlp = 4 * dim;
        Ok(SingleBlock {
            norm: candle_nn::linear(dim, 3 * dim, vb.pp("norm.linear"))?,
            qkv: Qkv::new(
                &vb.pp("attn"),
                dim,
                dim / heads,
                ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
            )?,
            proj_mlp: candle_nn::linear(dim, mlp, vb.pp("proj_mlp"))?,
            proj_out: candle_nn::linear(dim + mlp, dim, vb.pp("proj_out"))?,
            layer_norm: PlainLayerNorm::new(dim, EPS, vb.dtype(), vb.device())?,
            heads,
        })
    }

    /// `(hidden, encoder)` → `(hidden, encoder)`: the two streams run as one sequence, text
    /// first, and are split again after.
    pub fn forward(
        &self,
        hidden: &Tensor,
        encoder: &Tensor,
        temb: &Tensor,
        rope: &RopeTables,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_with(hidden, encoder, temb, rope, None)
    }

    /// [`SingleBlock::forward`] with `hook` around the attention module (`attn`: q/k/v of the
    /// joint sequence and the attention; its output covers text and image tokens).
    pub fn forward_with(
        &self,
        hidden: &Tensor,
        encoder: &Tensor,
        temb: &Tensor,
        rope: &RopeTables,
        hook: Option<(&mut dyn AttentionHook, BlockAt)>,
    ) -> Result<(Tensor, Tensor)> {
        let text_len = encoder.dim(1)?;
        let x = Tensor::cat(&[encoder, hidden], 1)?;
        let m = self.norm.forward(&temb.silu()?)?.chunk(3, D::Minus1)?;
        let normed = modulate(&self.layer_norm.forward(&x)?, &m[0], &m[1])?;
        let mlp = self.proj_mlp.forward(&normed)?.gelu()?;
        let mut module = || -> Result<AttentionOutput> {
            let (q, k, v) = self.qkv.project(&normed, self.heads)?;
            Ok(AttentionOutput::image(attention(&q, &k, &v, rope)?))
        };
        let attn = match hook {
            Some((hook, at)) => hook.attention(at, &mut module)?.hidden,
            None => module()?.hidden,
        };
        let out = self.proj_out.forward(&Tensor::cat(&[&attn, &mlp], 2)?)?;
        let x = clip_f16(gated(&x, &m[2], &out)?)?;
        let total = x.dim(1)?;
        Ok((
            x.narrow(1, text_len, total - text_len)?,
            x.narrow(1, 0, text_len)?,
        ))
    }
}

/// diffusers clips f16 activations to the finite range after each block.
fn clip_f16(x: Tensor) -> Result<Tensor> {
    if x.dtype() == candle_core::DType::F16 {
        x.clamp(-65504f32, 65504f32)
    } else {
        Ok(x)
    }
}
