//! CPU kernels with a backward pass for training: tanh-GELU, softmax over the last dim and
//! LayerNorm without affine params, each one fused pass split over the cores. candle's fused
//! `softmax_last_dim`/`layer_norm` have no backward, and its composed GELU backward takes a
//! dozen single-threaded passes, which made it most of a training step's time.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// `sqrt(2/π)`, as in the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044_715;

/// The contiguous f32 values of a CPU tensor argument.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{op}: only f32 is supported");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    Ok(&values[start..end])
}

/// Runs `f(first_row, out_rows)` over `out` split into row-aligned chunks, one per core.
fn par_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let row_len = row_len.max(1);
    let rows = out.len() / row_len;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Small tensors are not worth a thread.
    if threads <= 1 || out.len() < 1 << 15 {
        f(0, out);
        return;
    }
    let rows_per = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (i, chunk) in out.chunks_mut(rows_per * row_len).enumerate() {
            let f = &f;
            scope.spawn(move || f(i * rows_per, chunk));
        }
    });
}

fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// Checks that two arguments of a backward op have the same shape and returns the row length.
fn same_shape(l1: &Layout, l2: &Layout, op: &str) -> Result<usize> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
    }
    Ok(last_dim(l1))
}

/// `0.5·(1 + tanh(k(x + c·x³)))` written as the sigmoid `σ(2k(x + c·x³))`: the same value,
/// and `exp` is several times cheaper than `tanh`.
fn gelu_gate(x: f32) -> f32 {
    1.0 / (1.0 + (-2.0 * SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x)).exp())
}

fn gelu(x: f32) -> f32 {
    x * gelu_gate(x)
}

/// `σ + 2k·x·σ(1 − σ)(1 + 3c·x²)`, the derivative of `x·σ(2k(x + c·x³))`.
fn gelu_derivative(x: f32) -> f32 {
    let s = gelu_gate(x);
    s + 2.0 * SQRT_2_OVER_PI * x * s * (1.0 - s) * (1.0 + 3.0 * GELU_COEF * x * x)
}

struct Gelu;
struct GeluBackward;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, 1, |start, chunk| {
            for (o, &v) in chunk.iter_mut().zip(&x[start..]) {
                *o = gelu(v);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?,
        ))
    }
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "gelu-tanh-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(l1, l2, self.name())?;
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, 1, |start, chunk| {
            for (i, o) in chunk.iter_mut().enumerate() {
                *o = g[start + i] * gelu_derivative(x[start + i]);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct Softmax;
struct SoftmaxBackward;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = last_dim(layout);
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, n, |row0, chunk| {
            for (r, o) in chunk.chunks_mut(n).enumerate() {
                let xs = &x[(row0 + r) * n..(row0 + r + 1) * n];
                let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &v) in o.iter_mut().zip(xs) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                o.iter_mut().for_each(|v| *v /= sum);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-last-dim-backward"
    }

    /// `s · (g − Σ g·s)` per row, from the softmax output `s` and its gradient `g`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = same_shape(l1, l2, self.name())?;
        let s = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; s.len()];
        par_rows(&mut out, n, |row0, chunk| {
            for (r, o) in chunk.chunks_mut(n).enumerate() {
                let base = (row0 + r) * n;
                let (ss, gs) = (&s[base..base + n], &g[base..base + n]);
                let dot: f32 = ss.iter().zip(gs).map(|(a, b)| a * b).sum();
                for ((o, &sv), &gv) in o.iter_mut().zip(ss).zip(gs) {
                    *o = sv * (gv - dot);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct LayerNorm {
    eps: f32,
}
struct LayerNormBackward {
    eps: f32,
}

/// Mean and `1/sqrt(var + eps)` of one row.
fn row_stats(xs: &[f32], eps: f32) -> (f32, f32) {
    let n = xs.len().max(1) as f32;
    let mean = xs.iter().sum::<f32>() / n;
    let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let n = last_dim(layout);
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, n, |row0, chunk| {
            for (r, o) in chunk.chunks_mut(n).enumerate() {
                let xs = &x[(row0 + r) * n..(row0 + r + 1) * n];
                let (mean, rstd) = row_stats(xs, self.eps);
                for (o, &v) in o.iter_mut().zip(xs) {
                    *o = (v - mean) * rstd;
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?))
    }
}

impl CustomOp2 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer-norm-backward"
    }

    /// `rstd · (g − mean(g) − x̂ · mean(g · x̂))` per row, from the input `x` and gradient `g`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = same_shape(l1, l2, self.name())?;
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, n, |row0, chunk| {
            for (r, o) in chunk.chunks_mut(n).enumerate() {
                let base = (row0 + r) * n;
                let (xs, gs) = (&x[base..base + n], &g[base..base + n]);
                let (mean, rstd) = row_stats(xs, self.eps);
                let inv_n = 1.0 / n as f32;
                let g_mean = gs.iter().sum::<f32>() * inv_n;
                let gx_mean = xs
                    .iter()
                    .zip(gs)
                    .map(|(&xv, &gv)| (xv - mean) * rstd * gv)
                    .sum::<f32>()
                    * inv_n;
                for ((o, &xv), &gv) in o.iter_mut().zip(xs).zip(gs) {
                    *o = rstd * (gv - g_mean - (xv - mean) * rstd * gx_mean);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Whether the fused CPU kernels apply (f32 on the CPU); other devices use composed ops.
fn cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// tanh-approximated GELU with a backward pass.
pub fn gelu_train(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu()
    }
}

/// Softmax over the last dim with a backward pass.
pub fn softmax_train(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)
    }
}

/// LayerNorm over the last dim, no affine params, with a backward pass.
pub fn layer_norm_train(x: &Tensor, eps: f32) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(LayerNorm { eps })
    } else {
        let d = candle_core::D::Minus1;
        let centered = x.broadcast_sub(&x.mean_keepdim(d)?)?;
        let var = centered.sqr()?.mean_keepdim(d)?;
        centered.broadcast_div(&(var + eps as f64)?.sqrt()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::INFINITY)
    }

    /// Each fused op must match candle's composed reference in value and in gradient.
    fn check(
        fused: impl Fn(&Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        // Big enough to take the threaded path, odd-sized rows.
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.5, (37, 61, 29), &Device::Cpu)?))?;
        let w = Tensor::randn(0f32, 1.0, (37, 61, 29), &Device::Cpu)?;
        let (a, b) = (fused(x.as_tensor())?, reference(x.as_tensor())?);
        assert!(
            max_diff(&a, &b) < 1e-5,
            "forward differs by {}",
            max_diff(&a, &b)
        );
        let ga = (a * &w)?.sum_all()?.backward()?;
        let gb = (b * &w)?.sum_all()?.backward()?;
        let (ga, gb) = (
            ga.get(x.as_tensor()).cloned(),
            gb.get(x.as_tensor()).cloned(),
        );
        let (Some(ga), Some(gb)) = (ga, gb) else {
            panic!("no gradient")
        };
        assert!(
            max_diff(&ga, &gb) < 1e-4,
            "gradient differs by {}",
            max_diff(&ga, &gb)
        );
        Ok(())
    }

    #[test]
    fn gelu_matches_candle() -> Result<()> {
        check(gelu_train, |x| x.gelu())
    }

    #[test]
    fn softmax_matches_candle() -> Result<()> {
        check(softmax_train, |x| candle_nn::ops::softmax(x, D::Minus1))
    }

    #[test]
    fn layer_norm_matches_composed() -> Result<()> {
        check(
            |x| layer_norm_train(x, 1e-6),
            |x| {
                let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let v = c.sqr()?.mean_keepdim(D::Minus1)?;
                c.broadcast_div(&(v + 1e-6)?.sqrt()?)
            },
        )
    }
}
