//! Noise on a reused residual (`noise_scale`), scaled to the residual's mean |value| and seeded,
//! so a run is reproducible on any device.
//!
//! Drawing fresh normals on the CPU for every reuse would cost milliseconds per call on large
//! models (more than a GPU step). Instead each branch draws one pool of normals on the CPU at
//! its first reuse (seeded by seed and branch) and every reuse takes that pool rotated by a
//! seeded, step-dependent offset: different noise per step, no host work, no host sync.

use super::record::CfgBranch;
use crate::rng::Rng;
use candle_core::{Result, Tensor};

fn branch_code(branch: CfgBranch) -> u64 {
    match branch {
        CfgBranch::Batched => 0,
        CfgBranch::Cond => 1,
        CfgBranch::Uncond => 2,
    }
}

/// One branch's reuse noise.
#[derive(Debug, Clone)]
pub struct ReuseNoise {
    scale: f64,
    seed: u64,
    branch: CfgBranch,
    /// Standard normals, flat, in the residual's dtype and device.
    pool: Option<Tensor>,
}

impl ReuseNoise {
    pub fn new(scale: f64, seed: u64, branch: CfgBranch) -> Self {
        ReuseNoise {
            scale,
            seed,
            branch,
            pool: None,
        }
    }

    /// `residual + N(0, 1) · scale · mean|residual|`; the residual itself when `scale` is 0.
    pub fn perturb(&mut self, residual: &Tensor, step: usize) -> Result<Tensor> {
        if self.scale <= 0.0 {
            return Ok(residual.clone());
        }
        let n = residual.elem_count();
        let pool = match &self.pool {
            Some(p) if p.elem_count() == n && p.dtype() == residual.dtype() => p.clone(),
            _ => {
                let stream =
                    self.seed.wrapping_mul(0x0000_0100_0000_01B3) ^ branch_code(self.branch);
                let p = Rng::new(stream)
                    .randn(n, residual.device())?
                    .to_dtype(residual.dtype())?;
                self.pool = Some(p.clone());
                p
            }
        };
        let offset = (Rng::new(self.seed ^ (step as u64).rotate_left(32)).below(n as u64)) as usize;
        let rotated = if offset == 0 {
            pool
        } else {
            Tensor::cat(
                &[
                    pool.narrow(0, offset, n - offset)?,
                    pool.narrow(0, 0, offset)?,
                ],
                0,
            )?
        };
        let noise = rotated.reshape(residual.shape())?;
        let magnitude = residual.abs()?.mean_all()?.affine(self.scale, 0.0)?;
        residual + noise.broadcast_mul(&magnitude)?
    }

    /// Bytes held by the pool.
    pub fn bytes(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(0, |p| p.elem_count() * p.dtype().size_in_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1())
            .expect("values")
    }

    #[test]
    fn zero_scale_is_exact_and_noise_is_seeded_per_step_and_relative() {
        let r = (Tensor::ones((2, 64, 8), DType::F32, &Device::Cpu).expect("t") * 4.0).expect("t");
        let mut exact = ReuseNoise::new(0.0, 1, CfgBranch::Batched);
        assert_eq!(values(&exact.perturb(&r, 3).expect("p")), values(&r));
        assert_eq!(exact.bytes(), 0);
        let mut a = ReuseNoise::new(0.01, 1, CfgBranch::Batched);
        let mut b = ReuseNoise::new(0.01, 1, CfgBranch::Batched);
        let a3 = values(&a.perturb(&r, 3).expect("p"));
        assert_eq!(
            a3,
            values(&b.perturb(&r, 3).expect("p")),
            "same seed, step: same noise"
        );
        assert_ne!(
            a3,
            values(&a.perturb(&r, 4).expect("p")),
            "another step, other noise"
        );
        let mut other = ReuseNoise::new(0.01, 1, CfgBranch::Uncond);
        assert_ne!(
            a3,
            values(&other.perturb(&r, 3).expect("p")),
            "branches differ"
        );
        // σ of the added noise ≈ 0.01 · mean|r| = 0.04.
        let dev: Vec<f64> = a3.iter().map(|&x| f64::from(x) - 4.0).collect();
        let sd = (dev.iter().map(|d| d * d).sum::<f64>() / dev.len() as f64).sqrt();
        assert!((sd - 0.04).abs() < 0.006, "σ {sd}");
        assert_eq!(a.bytes(), 2 * 64 * 8 * 4);
    }
}
