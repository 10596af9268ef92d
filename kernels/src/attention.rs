//! Fused multi-head self-attention on the CPU, straight from packed `[q | k | v]` projection
//! rows: per batch item, head and tile of query rows, the scores of that tile only (never the
//! whole `N × N` matrix), a vectorised softmax, and the tile's output; tiles run in parallel.

use crate::gemm::{matmul, MatMut, MatRef};
use crate::scratch::Scratch;
use crate::simd::softmax_rows_in_place;
use candle_core::Result;
use rayon::prelude::*;

/// Scores a tile may hold (512 KiB of f32): a tile's `rows × N` scores stay in L2, so the whole
/// matrix is never materialised once it would not fit; up to that, fewer and larger products.
const TILE_SCORES: usize = 1 << 17;

/// Query rows per tile for `tokens` keys: as many as fit [`TILE_SCORES`], at least 16.
fn tile_rows(tokens: usize) -> usize {
    (TILE_SCORES / tokens.max(1)).clamp(16, tokens.max(16))
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// `heads · head_dim`, the width of q, k, v and the output.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// `softmax(q·kᵀ/√d)·v` per head. `qkv`: `[batch·tokens, 3·width]`, each row `[q | k | v]`
/// with heads side by side inside each; `out`: `[batch·tokens, width]`, heads side by side.
pub fn self_attention(qkv: &[f32], shape: AttentionShape, out: &mut [f32]) -> Result<()> {
    self_attention_tiled(qkv, shape, out, tile_rows(shape.tokens), true)
}

/// [`self_attention`] on the calling thread only (inside work that is already split over the
/// threads).
pub fn self_attention_serial(qkv: &[f32], shape: AttentionShape, out: &mut [f32]) -> Result<()> {
    self_attention_tiled(qkv, shape, out, tile_rows(shape.tokens), false)
}

/// [`self_attention`] with `tile` query rows per tile, over the thread pool when `parallel`.
fn self_attention_tiled(
    qkv: &[f32],
    shape: AttentionShape,
    out: &mut [f32],
    tile: usize,
    parallel: bool,
) -> Result<()> {
    let AttentionShape {
        batch,
        tokens,
        heads,
        head_dim,
    } = shape;
    let width = shape.width();
    let rows = batch * tokens;
    if qkv.len() != rows * 3 * width || out.len() != rows * width {
        candle_core::bail!(
            "attention: qkv holds {} and out {} values for {batch}×{tokens} tokens of width {width}",
            qkv.len(),
            out.len()
        );
    }
    if rows == 0 || width == 0 {
        return Ok(());
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let stride = 3 * width;
    // Per (batch item, head): the head's output rows `[tokens, head_dim]`, tile by tile.
    let mut per_head = Scratch::take(rows * width);
    let tile = tile.max(1);
    let mut tasks = Vec::new();
    for (bh, head_out) in per_head.chunks_mut(tokens * head_dim).enumerate() {
        for (index, rows_out) in head_out.chunks_mut(tile * head_dim).enumerate() {
            tasks.push((bh / heads, bh % heads, index * tile, rows_out));
        }
    }
    let run = |(b, h, first, rows_out): (usize, usize, usize, &mut [f32])| -> Result<()> {
        let n = rows_out.len() / head_dim;
        let base = b * tokens * stride + h * head_dim;
        let q = MatRef::new(&qkv[base + first * stride..], n, head_dim, stride, 1)?;
        let k = MatRef::new(&qkv[base + width..], tokens, head_dim, stride, 1)?;
        let v = MatRef::new(&qkv[base + 2 * width..], tokens, head_dim, stride, 1)?;
        let mut scores = Scratch::take(n * tokens);
        matmul(
            MatMut::row_major(&mut scores, n, tokens)?,
            q,
            k.t(),
            false,
            scale,
            1,
        )?;
        softmax_rows_in_place(&mut scores, tokens);
        matmul(
            MatMut::row_major(rows_out, n, head_dim)?,
            MatRef::row_major(&scores, n, tokens)?,
            v,
            false,
            1.0,
            1,
        )
    };
    let threads = candle_core::utils::get_num_threads();
    if parallel && threads > 1 && tasks.len() > 1 {
        candle_core::utils::with_threadpool(|| tasks.into_par_iter().try_for_each(run))?;
    } else {
        tasks.into_iter().try_for_each(run)?;
    }
    // Heads side by side again: out[b, t, h·d + i] = per_head[b, h, t, i].
    for (row, out_row) in out.chunks_mut(width).enumerate() {
        let (b, t) = (row / tokens, row % tokens);
        for (h, dst) in out_row.chunks_mut(head_dim).enumerate() {
            let src = ((b * heads + h) * tokens + t) * head_dim;
            dst.copy_from_slice(&per_head[src..src + head_dim]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook computation in f64.
    fn reference(qkv: &[f32], s: AttentionShape) -> Vec<f64> {
        let w = s.width();
        let mut out = vec![0f64; s.batch * s.tokens * w];
        let at = |b: usize, t: usize, part: usize, h: usize, i: usize| {
            qkv[(b * s.tokens + t) * 3 * w + part * w + h * s.head_dim + i] as f64
        };
        for b in 0..s.batch {
            for h in 0..s.heads {
                for t in 0..s.tokens {
                    let scores: Vec<f64> = (0..s.tokens)
                        .map(|u| {
                            (0..s.head_dim)
                                .map(|i| at(b, t, 0, h, i) * at(b, u, 1, h, i))
                                .sum::<f64>()
                                / (s.head_dim as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for i in 0..s.head_dim {
                        out[(b * s.tokens + t) * w + h * s.head_dim + i] =
                            (0..s.tokens).map(|u| e[u] / sum * at(b, u, 2, h, i)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_textbook_attention_across_tiles() {
        let s = AttentionShape {
            batch: 2,
            tokens: 150,
            heads: 3,
            head_dim: 8,
        };
        let qkv: Vec<f32> = (0..s.batch * s.tokens * 3 * s.width())
            .map(|i| (((i * 7919) % 1009) as f32 / 1009.0 - 0.5) * 2.0)
            .collect();
        let want = reference(&qkv, s);
        // One tile of all 150 rows, as `self_attention` picks; and tiles of 64, 64 and 22.
        for tile in [tile_rows(s.tokens), 64] {
            let mut out = vec![0f32; s.batch * s.tokens * s.width()];
            self_attention_tiled(&qkv, s, &mut out, tile, tile == 64).unwrap();
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "tile {tile}: {worst:e}");
        }
        assert_eq!(tile_rows(150), 150);
        assert_eq!(
            tile_rows(4096),
            32,
            "FLUX.1 at 1024²: 32 rows, 512 KiB of scores"
        );
    }

    #[test]
    fn wrong_sizes_are_an_error() {
        let s = AttentionShape {
            batch: 1,
            tokens: 4,
            heads: 1,
            head_dim: 2,
        };
        let mut out = vec![0f32; 8];
        assert!(self_attention(&[0.0; 10], s, &mut out).is_err());
    }
}
