//! The DiT's patch embedding and output head on the CPU kernels (f32): patches gathered once
//! and projected with the bias and position embedding folded into the product's start; the
//! head's LayerNorm with its adaLN modulation in one pass, the projection, and unpatchify as
//! one copy. Every call pays these, reused or not, so they are kept to a few passes.

use super::cpu_block::{enabled, Weights};
use crate::kernels::gemm::{matmul, MatMut, MatRef};
use crate::kernels::simd::layer_norm_modulate;
use crate::kernels::CpuF32;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Linear;

/// Whether `t` is something the CPU kernels take (f32 on the CPU, kernels on).
pub(super) fn applies(t: &Tensor) -> bool {
    enabled() && matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

/// `[B, C, H, W]` → tokens `[B, (H/p)·(W/p), hidden]`: flattened patches (C, p, p order)
/// times the convolution's flattened kernel `weight` `[hidden, C·p·p]`, plus `bias` and the
/// position embedding `pos` `[1, tokens, hidden]`.
pub(super) fn patch_embed(
    x: &Tensor,
    patch: usize,
    weight: &Tensor,
    bias: &Tensor,
    pos: &Tensor,
) -> Result<Tensor> {
    let (b, c, height, width) = x.dims4()?;
    let p = patch.max(1);
    let (h, w) = (height / p, width / p);
    let tokens = h * w;
    let (hidden, k) = weight.dims2()?;
    let x = x.contiguous()?;
    let (Some(xs), Some(ws), Some(bs), Some(ps)) = (
        CpuF32::of(&x),
        CpuF32::of(weight),
        CpuF32::of(bias),
        CpuF32::of(pos),
    ) else {
        candle_core::bail!("patch embedding: the CPU kernels need f32 tensors on the CPU");
    };
    let (xs, ws, bs, ps) = (xs.values(), ws.values(), bs.values(), ps.values());
    if k != c * p * p || bs.len() != hidden || ps.len() != tokens * hidden {
        candle_core::bail!("patch embedding: weights do not fit {c} channels and patch {p}");
    }
    // patches[b, r·w + q, (ch·p + i)·p + j] = x[b, ch, r·p + i, q·p + j].
    let mut patches = vec![0f32; b * tokens * k];
    for (bi, item) in patches.chunks_mut(tokens * k).enumerate() {
        for (t, row) in item.chunks_mut(k).enumerate() {
            let (r, q) = (t / w, t % w);
            for ch in 0..c {
                for i in 0..p {
                    let src = ((bi * c + ch) * height + r * p + i) * width + q * p;
                    let dst = (ch * p + i) * p;
                    row[dst..dst + p].copy_from_slice(&xs[src..src + p]);
                }
            }
        }
    }
    // Start from bias + position, then add the product.
    let mut out = vec![0f32; b * tokens * hidden];
    for item in out.chunks_mut(tokens * hidden) {
        for (row, pos_row) in item.chunks_mut(hidden).zip(ps.chunks(hidden)) {
            for ((o, &pv), &bv) in row.iter_mut().zip(pos_row).zip(bs) {
                *o = pv + bv;
            }
        }
    }
    matmul(
        MatMut::row_major(&mut out, b * tokens, hidden)?,
        MatRef::row_major(&patches, b * tokens, k)?,
        MatRef::row_major(ws, hidden, k)?.t(),
        true,
        1.0,
        1,
    )?;
    Tensor::from_vec(out, (b, tokens, hidden), &Device::Cpu)
}

/// The output head: `LN(hidden)·(1 + scale) + shift` (`mods` `[B, 2·hidden]`: shift, then
/// scale), projected by `proj`, unpatchified to `[B, channels, h·p, w·p]`.
pub(super) fn head(
    hidden: &Tensor,
    mods: &Tensor,
    eps: f32,
    proj: &Linear,
    grid: (usize, usize),
    patch: usize,
    channels: usize,
) -> Result<Tensor> {
    let (b, tokens, d) = hidden.dims3()?;
    let hidden = hidden.contiguous()?;
    let mods = mods.contiguous()?;
    let (Some(xs), Some(ms), Some(w)) = (CpuF32::of(&hidden), CpuF32::of(&mods), Weights::of(proj))
    else {
        candle_core::bail!("DiT head: the CPU kernels need f32 tensors on the CPU");
    };
    let (xs, ms) = (xs.values(), ms.values());
    let (h, wd) = grid;
    let p = patch;
    let width = p * p * channels;
    if ms.len() != b * 2 * d || h * wd != tokens || w.inp != d || w.out != width {
        candle_core::bail!("DiT head: shapes do not fit {tokens} tokens of width {d}");
    }
    let mut y = vec![0f32; b * tokens * d];
    for (bi, (x_item, y_item)) in xs
        .chunks(tokens * d)
        .zip(y.chunks_mut(tokens * d))
        .enumerate()
    {
        let m = &ms[bi * 2 * d..(bi + 1) * 2 * d];
        layer_norm_modulate(x_item, y_item, &m[..d], &m[d..], eps);
    }
    let mut z = vec![0f32; b * tokens * width];
    w.apply(&y, b * tokens, &mut z, width)?;
    // "nhwpqc -> nchpwq": out[b, c, r·p + i, q·p + j] = z[b, r, q, i, j, c].
    let (oh, ow) = (h * p, wd * p);
    let mut out = vec![0f32; b * channels * oh * ow];
    for bi in 0..b {
        for r in 0..h {
            for q in 0..wd {
                let src = &z[((bi * h + r) * wd + q) * width..][..width];
                for i in 0..p {
                    for j in 0..p {
                        for c in 0..channels {
                            out[((bi * channels + c) * oh + r * p + i) * ow + q * p + j] =
                                src[(i * p + j) * channels + c];
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, channels, oh, ow), &Device::Cpu)
}
