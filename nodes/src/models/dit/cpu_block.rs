//! The DiT block on the CPU kernels (f32, inference): LayerNorm fused with the adaLN
//! modulation, the q/k/v products written into one packed buffer with their biases, fused
//! attention, the output projection with its gated residual, then the feed-forward with bias
//! and tanh-GELU in one pass and the second gated residual. The math of `DiTBlock::forward`'s
//! candle path, with no intermediate tensor, no transpose copies and every pass vectorised;
//! rows are split over the threads, batch item by batch item (the modulation is per item).

use super::block::{DiTBlock, Kernels};
use crate::kernels::attention::{self_attention, self_attention_serial, AttentionShape};
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::scratch::Scratch;
use crate::kernels::simd::{bias_gelu_in_place, gated_residual, layer_norm_modulate};
use crate::kernels::CpuF32;
use crate::models::blocks::{AttentionHook, AttentionOutput, BlockAt};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

/// A linear layer's weight `[out, in]` and bias, borrowed.
pub(super) struct Weights<'a> {
    weight: CpuF32<'a>,
    bias: Option<CpuF32<'a>>,
    pub(super) out: usize,
    pub(super) inp: usize,
}

impl<'a> Weights<'a> {
    pub(super) fn of(linear: &'a Linear) -> Option<Self> {
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
    pub(super) fn apply(
        &self,
        x: &[f32],
        rows: usize,
        dst: &mut [f32],
        dst_rs: usize,
    ) -> Result<()> {
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

/// A run of consecutive rows of the `[B·N, ·]` row order (it may span batch items), the unit of
/// parallel work.
#[derive(Debug, Clone, Copy)]
struct Rows {
    first: usize,
    count: usize,
}

impl Rows {
    /// The batch items the rows cover, as (item, offset in the piece, rows): the modulation is
    /// per item.
    fn segments(self, tokens: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let tokens = tokens.max(1);
        let end = self.first + self.count;
        let mut at = self.first;
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let item = at / tokens;
            let len = ((item + 1) * tokens).min(end) - at;
            let segment = (item, at - self.first, len);
            at += len;
            Some(segment)
        })
    }
}

/// Rows a piece keeps at least: fewer make products too thin to pay for their packing.
const MIN_PIECE_ROWS: usize = 32;

/// Splits the `batch·tokens` rows into pieces so that the threads have work: one piece on one
/// thread (each product sees every row: its weight packing is paid once), about two pieces per
/// thread otherwise, none thinner than [`MIN_PIECE_ROWS`].
fn pieces(batch: usize, tokens: usize, threads: usize) -> Vec<Rows> {
    let total = batch * tokens;
    let count = if threads <= 1 {
        1
    } else {
        (2 * threads).min(total / MIN_PIECE_ROWS).max(1)
    };
    let size = total.div_ceil(count.clamp(1, total.max(1))).max(1);
    (0..total)
        .step_by(size)
        .map(|first| Rows {
            first,
            count: size.min(total - first),
        })
        .collect()
}

/// Runs `f` over the pieces, in parallel when there is more than one thread.
fn for_pieces<T: Send>(
    threads: usize,
    tasks: Vec<T>,
    f: impl Fn(T) -> Result<()> + Sync + Send,
) -> Result<()> {
    if threads > 1 && tasks.len() > 1 {
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
    threads: usize,
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
    let ctx = Ctx {
        w: &w,
        xs,
        ms,
        hidden,
        tokens,
        shape,
        eps: (block.norm1.eps, block.norm3.eps),
    };
    let mut result = vec![0f32; batch * tokens * hidden];
    // With at least as many batch items as threads (a CFG batch of 2 on 2 cores) each item
    // runs on one thread: whole-item products, attention without splitting; without a hook the
    // whole block is one parallel region.
    let by_item = threads > 1 && batch >= threads;
    if by_item && hook.is_none() {
        let tasks: Vec<(usize, &mut [f32])> =
            result.chunks_mut(tokens * hidden).enumerate().collect();
        for_pieces(threads, tasks, |(item, dst)| ctx.item_block(item, dst))?;
        return Tensor::from_vec(result, (batch, tokens, hidden), &Device::Cpu);
    }
    let parts = if by_item {
        (0..batch)
            .map(|item| Rows {
                first: item * tokens,
                count: tokens,
            })
            .collect()
    } else {
        pieces(batch, tokens, threads)
    };

    // LN + modulate, q/k/v, attention: the attention before its output projection,
    // `[B·N, width]`.
    let attend = || -> Result<Scratch> {
        let mut att = Scratch::take(batch * tokens * width);
        if by_item {
            let tasks = split_rows(&mut att, &parts, width);
            for_pieces(threads, tasks, |(r, dst)| ctx.item_attention(r, dst))?;
            return Ok(att);
        }
        let mut qkv = Scratch::take(batch * tokens * 3 * width);
        let tasks = split_rows(&mut qkv, &parts, 3 * width);
        for_pieces(threads, tasks, |(r, dst)| ctx.qkv_rows(r, dst))?;
        self_attention(&qkv, shape, &mut att)?;
        Ok(att)
    };
    // With a hook the module's output (projected) is what it sees and may replace; without
    // one the projection runs inside the last pass, row piece by row piece.
    let attention = match hook {
        Some((hook, at)) => {
            let mut module = || -> Result<AttentionOutput> {
                let mut projected = vec![0f32; batch * tokens * hidden];
                if by_item {
                    // One parallel region: each item's attention and its projection together.
                    let tasks = split_rows(&mut projected, &parts, hidden);
                    for_pieces(threads, tasks, |(r, dst)| {
                        ctx.item_projected_attention(r, dst)
                    })?;
                } else {
                    let att = attend()?;
                    let tasks = split_rows(&mut projected, &parts, hidden);
                    for_pieces(threads, tasks, |(r, dst)| {
                        let (first, n) = (r.first, r.count);
                        w.out
                            .apply(&att[first * width..(first + n) * width], n, dst, hidden)
                    })?;
                }
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
    let tasks = split_rows(&mut result, &parts, hidden);
    for_pieces(threads, tasks, |(r, dst)| {
        let (first, n) = (r.first, r.count);
        let att = match (&attention, &projected) {
            (_, Some(p)) => {
                AttentionRows::Projected(&p.values()[first * hidden..(first + n) * hidden])
            }
            (Attention::Raw(att), None) => {
                AttentionRows::Raw(&att[first * width..(first + n) * width])
            }
            (Attention::Projected(_), None) => {
                candle_core::bail!("DiT block: attention output unreadable")
            }
        };
        ctx.mlp_rows(r, att, dst)
    })?;
    Tensor::from_vec(result, (batch, tokens, hidden), &Device::Cpu)
}

/// What the row passes of one block call read.
struct Ctx<'a> {
    w: &'a BlockWeights<'a>,
    xs: &'a [f32],
    /// `[B, 6·hidden]`: shift, scale, gate for attention, then for the MLP, per item.
    ms: &'a [f32],
    hidden: usize,
    tokens: usize,
    shape: AttentionShape,
    /// (norm1, norm3) epsilons.
    eps: (f32, f32),
}

/// The attention rows the last pass starts from.
enum AttentionRows<'a> {
    /// Before the output projection.
    Raw(&'a [f32]),
    /// Projected (a hook's output).
    Projected(&'a [f32]),
}

impl Ctx<'_> {
    fn modulation(&self, item: usize, which: usize) -> &[f32] {
        let at = (item * 6 + which) * self.hidden;
        &self.ms[at..at + self.hidden]
    }

    /// `dst` (the piece's rows of `[q | k | v]`) ← LN(x)·(1 + scale_msa) + shift_msa, projected.
    fn qkv_rows(&self, r: Rows, dst: &mut [f32]) -> Result<()> {
        let (first, n) = (r.first, r.count);
        let hidden = self.hidden;
        let width = self.shape.width();
        let mut h = Scratch::take(n * hidden);
        for (item, at, len) in r.segments(self.tokens) {
            let rows = (first + at) * hidden..(first + at + len) * hidden;
            layer_norm_modulate(
                &self.xs[rows],
                &mut h[at * hidden..(at + len) * hidden],
                self.modulation(item, 0),
                self.modulation(item, 1),
                self.eps.0,
            );
        }
        for (j, lin) in [&self.w.q, &self.w.k, &self.w.v].into_iter().enumerate() {
            lin.apply(&h, n, &mut dst[j * width..], 3 * width)?;
        }
        Ok(())
    }

    /// `dst` ← x1 + gate_mlp ⊙ (gelu(h2·W1ᵀ + b1)·W2ᵀ + b2), with x1 = x + gate_msa ⊙ attn and
    /// h2 = LN(x1)·(1 + scale_mlp) + shift_mlp, for the piece's rows.
    fn mlp_rows(&self, r: Rows, att: AttentionRows<'_>, dst: &mut [f32]) -> Result<()> {
        let (first, n) = (r.first, r.count);
        let hidden = self.hidden;
        let mut x1 = Scratch::take(n * hidden);
        match att {
            AttentionRows::Projected(p) => x1.copy_from_slice(p),
            AttentionRows::Raw(a) => self.w.out.apply(a, n, &mut x1, hidden)?,
        }
        let mut h2 = Scratch::take(n * hidden);
        for (item, at, len) in r.segments(self.tokens) {
            let local = at * hidden..(at + len) * hidden;
            let rows = (first + at) * hidden..(first + at + len) * hidden;
            gated_residual(
                &self.xs[rows],
                &mut x1[local.clone()],
                self.modulation(item, 2),
            );
            layer_norm_modulate(
                &x1[local.clone()],
                &mut h2[local],
                self.modulation(item, 3),
                self.modulation(item, 4),
                self.eps.1,
            );
        }
        let inner = self.w.ff_in.out;
        let mut f = Scratch::take(n * inner);
        matmul(
            MatMut::row_major(&mut f, n, inner)?,
            MatRef::row_major(&h2, n, hidden)?,
            MatRef::row_major(self.w.ff_in.weight.values(), inner, hidden)?.t(),
            false,
            1.0,
            1,
        )?;
        match &self.w.ff_in.bias {
            Some(b) => bias_gelu_in_place(&mut f, b.values()),
            None => bias_gelu_in_place(&mut f, &vec![0f32; inner]),
        }
        self.w.ff_out.apply(&f, n, dst, hidden)?;
        for (item, at, len) in r.segments(self.tokens) {
            let local = at * hidden..(at + len) * hidden;
            gated_residual(
                &x1[local.clone()],
                &mut dst[local],
                self.modulation(item, 5),
            );
        }
        Ok(())
    }

    /// The attention (before its projection) of the batch item whose rows `r` are, on this
    /// thread, into `dst`.
    fn item_attention(&self, r: Rows, dst: &mut [f32]) -> Result<()> {
        let width = self.shape.width();
        let mut qkv = Scratch::take(r.count * 3 * width);
        self.qkv_rows(r, &mut qkv)?;
        let one = AttentionShape {
            batch: 1,
            ..self.shape
        };
        self_attention_serial(&qkv, one, dst)
    }

    /// The projected attention of the batch item whose rows `r` are, on this thread, into
    /// `dst` (`[tokens, hidden]`): what an attention hook sees.
    fn item_projected_attention(&self, r: Rows, dst: &mut [f32]) -> Result<()> {
        let mut att = Scratch::take(r.count * self.shape.width());
        self.item_attention(r, &mut att)?;
        self.w.out.apply(&att, r.count, dst, self.hidden)
    }

    /// The whole block for batch item `item`, on this thread, into `dst` (its rows).
    fn item_block(&self, item: usize, dst: &mut [f32]) -> Result<()> {
        let rows = Rows {
            first: item * self.tokens,
            count: self.tokens,
        };
        let mut att = Scratch::take(self.tokens * self.shape.width());
        self.item_attention(rows, &mut att)?;
        self.mlp_rows(rows, AttentionRows::Raw(&att), dst)
    }
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
pub(super) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CACHEDIT_CPU_KERNELS").map_or(true, |v| v != "off"))
}

/// `buffer` (rows of `width`) cut into the pieces' rows, each with its piece.
fn split_rows<'a>(
    buffer: &'a mut [f32],
    parts: &[Rows],
    width: usize,
) -> Vec<(Rows, &'a mut [f32])> {
    let mut rest = buffer;
    let mut at = 0;
    let mut out = Vec::with_capacity(parts.len());
    for &r in parts {
        let start = r.first * width;
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
    use crate::models::dit::block::BlockDims;
    use candle_nn::VarBuilder;
    use std::collections::HashMap;

    /// An attention hook that always computes (the seam's path, same numbers).
    struct Compute;

    impl AttentionHook for Compute {
        fn attention(
            &mut self,
            _at: BlockAt,
            compute: &mut dyn FnMut() -> Result<AttentionOutput>,
        ) -> Result<AttentionOutput> {
            compute()
        }
    }

    /// A block with seeded random weights (hidden 64: 2 heads of 32).
    fn random_block() -> DiTBlock {
        let dims = BlockDims {
            hidden: 64,
            heads: 2,
            head_dim: 32,
            num_classes: 10,
            attention_bias: true,
            norm_eps: 1e-5,
        };
        let mut rng = crate::rng::Rng::new(3);
        let mut tensors = HashMap::new();
        let mut put = |name: &str, shape: &[usize]| {
            let t = rng.randn(shape.to_vec(), &Device::Cpu).expect("randn");
            tensors.insert(name.to_string(), (t * 0.1).expect("scale"));
        };
        for (name, out, inp) in [
            ("attn1.to_q", 64, 64),
            ("attn1.to_k", 64, 64),
            ("attn1.to_v", 64, 64),
            ("attn1.to_out.0", 64, 64),
            ("ff.net.0.proj", 256, 64),
            ("ff.net.2", 64, 256),
            ("norm1.linear", 384, 64),
            ("norm1.emb.timestep_embedder.linear_1", 64, 256),
            ("norm1.emb.timestep_embedder.linear_2", 64, 64),
        ] {
            put(&format!("{name}.weight"), &[out, inp]);
            put(&format!("{name}.bias"), &[out]);
        }
        put("norm1.emb.class_embedder.embedding_table.weight", &[11, 64]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        DiTBlock::new(vb, dims).expect("block")
    }

    #[test]
    fn the_kernels_give_candles_block_on_every_split() {
        let block = random_block();
        for batch in [1, 2, 3] {
            let mut rng = crate::rng::Rng::new(batch as u64);
            let x = rng.randn((batch, 37, 64), &Device::Cpu).expect("x");
            let mods = (rng.randn((batch, 384), &Device::Cpu).expect("mods") * 0.3).expect("scale");
            let want = block.forward_composed(&x, &mods, None).expect("candle");
            // 1 thread: one piece of every row; 2 and 3: per item or row pieces.
            for (threads, hooked) in [(1, false), (2, false), (3, false), (1, true), (2, true)] {
                let mut seam = Compute;
                let at = BlockAt { list: 0, index: 0 };
                let hook = hooked.then_some((&mut seam as &mut dyn AttentionHook, at));
                let ours = forward(&block, &x, &mods, hook, threads).expect("kernels");
                let err = (&ours - &want)
                    .and_then(|d| d.abs())
                    .and_then(|d| d.max_all())
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("diff");
                let scale = want
                    .abs()
                    .and_then(|d| d.max_all())
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("max");
                assert!(
                    err <= 2e-6 * scale,
                    "batch {batch}, {threads} threads, hook {hooked}: {err} of {scale}"
                );
            }
        }
    }

    #[test]
    fn pieces_cover_every_row_once_and_segments_follow_the_items() {
        for (batch, tokens, threads) in [(2, 256, 1), (2, 256, 2), (1, 7, 4), (3, 5, 16)] {
            let p = pieces(batch, tokens, threads);
            let rows: Vec<usize> = p
                .iter()
                .flat_map(|r| (0..r.count).map(move |i| r.first + i))
                .collect();
            assert_eq!(rows, (0..batch * tokens).collect::<Vec<_>>());
            if threads == 1 {
                assert_eq!(p.len(), 1, "one piece of every row on one thread");
            }
        }
        // Rows 3..9 of items of 4 tokens: item 0 rows 3, item 1 rows 4..8, item 2 row 8.
        let segments: Vec<_> = Rows { first: 3, count: 6 }.segments(4).collect();
        assert_eq!(segments, vec![(0, 0, 1), (1, 1, 4), (2, 5, 1)]);
    }
}
