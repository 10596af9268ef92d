//! The DiT block on the CPU kernels (f32, inference): LayerNorm fused with the adaLN
//! modulation, the q/k/v products written into one packed buffer with their biases, fused
//! attention, the output projection with its gated residual, then the feed-forward with bias
//! and tanh-GELU in one pass and the second gated residual. The math of `DiTBlock::forward`'s
//! candle path, with no intermediate tensor, no transpose copies and every pass vectorised;
//! rows are split over the threads, batch item by batch item (the modulation is per item).

use super::block::{DiTBlock, Kernels};
use crate::kernels::attention::{self_attention, AttentionShape};
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::scratch::Scratch;
use crate::kernels::simd::{bias_gelu_in_place, gated_residual, layer_norm_modulate};
use crate::kernels::{threads, CpuF32};
use crate::models::blocks::{AttentionHook, AttentionOutput, BlockAt};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

/// A linear layer's weight `[out, in]` and bias, borrowed.
struct Weights<'a> {
    weight: CpuF32<'a>,
    bias: Option<CpuF32<'a>>,
    out: usize,
    inp: usize,
}

impl<'a> Weights<'a> {
    fn of(linear: &'a Linear) -> Option<Self> {
        let (out, inp) = linear.weight().dims2().ok()?;
        let bias = match linear.bias() {
            Some(b) => Some(CpuF32::of(b)?),
            None => None,
        };
        Some(Weights {
            weight: CpuF32::of(linear.weight())?,
            bias,
            out,
            inp,
        })
    }

    /// `dst (rows × out, row stride dst_rs) ← x · Wᵀ + b`.
    fn apply(&self, x: &[f32], rows: usize, dst: &mut [f32], dst_rs: usize) -> Result<()> {
        match &self.bias {
            Some(b) => {
                for row in dst.chunks_mut(dst_rs).take(rows) {
                    row[..self.out].copy_from_slice(b.values());
                }
            }
            None => {
                for row in dst.chunks_mut(dst_rs).take(rows) {
                    row[..self.out].fill(0.0);
                }
            }
        }
        matmul(
            MatMut::new(dst, rows, self.out, dst_rs, 1)?,
            MatRef::row_major(x, rows, self.inp)?,
            MatRef::row_major(self.weight.values(), self.out, self.inp)?.t(),
            true,
            1.0,
            1,
        )
    }
}

/// The block's weights, borrowed for one call.
struct BlockWeights<'a> {
    q: Weights<'a>,
    k: Weights<'a>,
    v: Weights<'a>,
    out: Weights<'a>,
    ff_in: Weights<'a>,
    ff_out: Weights<'a>,
}

/// A run of rows of one batch item, the unit of parallel work.
#[derive(Debug, Clone, Copy)]
struct Rows {
    item: usize,
    first: usize,
    count: usize,
}

/// Splits every batch item's `tokens` rows into pieces so that the threads have work: one
/// piece per item on one thread, about two pieces per thread in all otherwise (large pieces
/// keep each product's weight packing amortised over many rows).
fn pieces(batch: usize, tokens: usize, threads: usize) -> Vec<Rows> {
    let per_item = if threads <= 1 {
        1
    } else {
        (2 * threads).div_ceil(batch.max(1)).clamp(1, tokens.max(1))
    };
    let size = tokens.div_ceil(per_item).max(1);
    (0..batch)
        .flat_map(|item| {
            (0..tokens).step_by(size).map(move |first| Rows {
                item,
                first,
                count: size.min(tokens - first),
            })
        })
        .collect()
}

/// Runs `f` over the pieces, in parallel when there is more than one thread.
fn for_pieces<T: Send>(tasks: Vec<T>, f: impl Fn(T) -> Result<()> + Sync + Send) -> Result<()> {
    if threads() > 1 && tasks.len() > 1 {
        candle_core::utils::with_threadpool(|| tasks.into_par_iter().try_for_each(f))
    } else {
        tasks.into_iter().try_for_each(f)
    }
}

/// Whether [`forward`] runs this block on these tokens: f32 on the CPU with the inference
/// kernels (training switches to differentiable ones), unless turned off.
pub(super) fn applies(block: &DiTBlock, x: &Tensor) -> bool {
    enabled()
        && block.attn.kernels == Kernels::Fused
        && block.norm1.kernels == Kernels::Fused
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
}

/// The block's output for tokens `x` `[B, N, hidden]` and its modulation `mods` `[B, 6·hidden]`
/// (shift, scale, gate for attention, then for the MLP), with `hook` around the attention
/// module (whose output is the projected attention, `[B, N, hidden]`). Call only where
/// [`applies`] holds.
pub(super) fn forward(
    block: &DiTBlock,
    x: &Tensor,
    mods: &Tensor,
    hook: Option<(&mut dyn AttentionHook, BlockAt)>,
) -> Result<Tensor> {
    let (batch, tokens, hidden) = x.dims3()?;
    let x = x.contiguous()?;
    let mods = mods.contiguous()?;
    let (Some(xs), Some(ms)) = (CpuF32::of(&x), CpuF32::of(&mods)) else {
        candle_core::bail!("DiT block: the CPU kernels need f32 tokens on the CPU");
    };
    let (Some(q), Some(k), Some(v), Some(out), Some(ff_in), Some(ff_out)) = (
        Weights::of(&block.attn.to_q),
        Weights::of(&block.attn.to_k),
        Weights::of(&block.attn.to_v),
        Weights::of(&block.attn.to_out),
        Weights::of(&block.ff.proj_in),
        Weights::of(&block.ff.proj_out),
    ) else {
        candle_core::bail!("DiT block: the CPU kernels need f32 weights on the CPU");
    };
    let w = BlockWeights {
        q,
        k,
        v,
        out,
        ff_in,
        ff_out,
    };
    let shape = AttentionShape {
        batch,
        tokens,
        heads: block.attn.heads,
        head_dim: block.attn.head_dim,
    };
    let width = shape.width();
    if mods.dims2()? != (batch, 6 * hidden)
        || w.q.inp != hidden
        || w.q.out != width
        || w.out.inp != width
        || w.out.out != hidden
        || w.ff_in.inp != hidden
        || w.ff_out.out != hidden
    {
        candle_core::bail!("DiT block: weights do not fit hidden size {hidden}");
    }
    let xs = xs.values();
    let ms = ms.values();
    // mods[b] = [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp], each `hidden`.
    let modulation = |item: usize, which: usize| {
        let at = (item * 6 + which) * hidden;
        &ms[at..at + hidden]
    };
    let rows_of = |r: Rows| (item_row(r, tokens), r.count);
    let parts = pieces(batch, tokens, threads());

    // LN + modulate, q/k/v, attention: the attention before its output projection,
    // `[B·N, width]`.
    let attend = || -> Result<Scratch> {
        // h = LN(x)·(1 + scale_msa) + shift_msa; qkv = [h·Wqᵀ + bq | h·Wkᵀ + bk | h·Wvᵀ + bv].
        let mut qkv = Scratch::take(batch * tokens * 3 * width);
        let tasks = split_rows(&mut qkv, &parts, tokens, 3 * width);
        for_pieces(tasks, |(r, dst)| {
            let (first, n) = rows_of(r);
            let mut h = Scratch::take(n * hidden);
            layer_norm_modulate(
                &xs[first * hidden..(first + n) * hidden],
                &mut h,
                modulation(r.item, 0),
                modulation(r.item, 1),
                block.norm1.eps,
            );
            for (j, lin) in [&w.q, &w.k, &w.v].into_iter().enumerate() {
                lin.apply(&h, n, &mut dst[j * width..], 3 * width)?;
            }
            Ok(())
        })?;
        let mut att = Scratch::take(batch * tokens * width);
        self_attention(&qkv, shape, &mut att)?;
        Ok(att)
    };
    // With a hook the module's output (projected) is what it sees and may replace; without
    // one the projection runs inside the last pass, row piece by row piece.
    let attention = match hook {
        Some((hook, at)) => {
            let mut module = || -> Result<AttentionOutput> {
                let att = attend()?;
                let mut projected = vec![0f32; batch * tokens * hidden];
                let tasks = split_rows(&mut projected, &parts, tokens, hidden);
                for_pieces(tasks, |(r, dst)| {
                    let (first, n) = rows_of(r);
                    w.out
                        .apply(&att[first * width..(first + n) * width], n, dst, hidden)
                })?;
                Ok(AttentionOutput::image(Tensor::from_vec(
                    projected,
                    (batch, tokens, hidden),
                    &Device::Cpu,
                )?))
            };
            let attn = hook.attention(at, &mut module)?.hidden;
            if attn.dims() != x.dims() {
                candle_core::bail!(
                    "DiT block: attention output {:?} for tokens {:?}",
                    attn.dims(),
                    x.dims()
                );
            }
            Attention::Projected(attn.contiguous()?)
        }
        None => Attention::Raw(attend()?),
    };
    let projected = match &attention {
        Attention::Projected(t) => match CpuF32::of(t) {
            Some(values) => Some(values),
            None => candle_core::bail!("DiT block: attention output is not f32 on the CPU"),
        },
        Attention::Raw(_) => None,
    };

    // x1 = x + gate_msa ⊙ attn; h2 = LN(x1)·(1 + scale_mlp) + shift_mlp;
    // out = x1 + gate_mlp ⊙ (gelu(h2·W1ᵀ + b1)·W2ᵀ + b2).
    let inner = w.ff_in.out;
    let mut result = vec![0f32; batch * tokens * hidden];
    let tasks = split_rows(&mut result, &parts, tokens, hidden);
    for_pieces(tasks, |(r, dst)| {
        let (first, n) = rows_of(r);
        let rows = first * hidden..(first + n) * hidden;
        let mut x1 = Scratch::take(n * hidden);
        match (&attention, &projected) {
            (_, Some(p)) => x1.copy_from_slice(&p.values()[rows.clone()]),
            (Attention::Raw(att), None) => {
                w.out
                    .apply(&att[first * width..(first + n) * width], n, &mut x1, hidden)?
            }
            (Attention::Projected(_), None) => {
                candle_core::bail!("DiT block: attention output unreadable")
            }
        }
        gated_residual(&xs[rows], &mut x1, modulation(r.item, 2));
        let mut h2 = Scratch::take(n * hidden);
        layer_norm_modulate(
            &x1,
            &mut h2,
            modulation(r.item, 3),
            modulation(r.item, 4),
            block.norm3.eps,
        );
        let mut f = Scratch::take(n * inner);
        matmul(
            MatMut::row_major(&mut f, n, inner)?,
            MatRef::row_major(&h2, n, hidden)?,
            MatRef::row_major(w.ff_in.weight.values(), inner, hidden)?.t(),
            false,
            1.0,
            1,
        )?;
        match &w.ff_in.bias {
            Some(b) => bias_gelu_in_place(&mut f, b.values()),
            None => bias_gelu_in_place(&mut f, &vec![0f32; inner]),
        }
        w.ff_out.apply(&f, n, dst, hidden)?;
        gated_residual(&x1, dst, modulation(r.item, 5));
        Ok(())
    })?;
    Tensor::from_vec(result, (batch, tokens, hidden), &Device::Cpu)
}

/// The attention module's result as the last pass reads it.
enum Attention {
    /// Before the output projection (no hook): the last pass projects it.
    Raw(Scratch),
    /// The module's output (projected), as a hook returned it.
    Projected(Tensor),
}

/// Whether the CPU kernels run the block: yes unless `CACHEDIT_CPU_KERNELS=off` (for
/// comparing with candle's own ops, which then run every step).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CACHEDIT_CPU_KERNELS").map_or(true, |v| v != "off"))
}

/// The first row of a piece in the `[B·N, ·]` row order.
fn item_row(r: Rows, tokens: usize) -> usize {
    r.item * tokens + r.first
}

/// `buffer` (rows of `width`) cut into the pieces' rows, each with its piece.
fn split_rows<'a>(
    buffer: &'a mut [f32],
    parts: &[Rows],
    tokens: usize,
    width: usize,
) -> Vec<(Rows, &'a mut [f32])> {
    let mut rest = buffer;
    let mut at = 0;
    let mut out = Vec::with_capacity(parts.len());
    for &r in parts {
        let start = item_row(r, tokens) * width;
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
        let (mine, tail) = tail.split_at_mut(r.count * width);
        out.push((r, mine));
        rest = tail;
        at = start + r.count * width;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_row_once_in_order() {
        for (batch, tokens, threads) in [(2, 256, 1), (2, 256, 2), (1, 7, 4), (3, 5, 16)] {
            let p = pieces(batch, tokens, threads);
            let rows: Vec<usize> = p
                .iter()
                .flat_map(|r| (0..r.count).map(move |i| item_row(*r, tokens) + i))
                .collect();
            assert_eq!(rows, (0..batch * tokens).collect::<Vec<_>>());
            if threads == 1 {
                assert_eq!(p.len(), batch, "one piece per item on one thread");
            }
        }
    }
}
