//! FLUX.1 embeddings: the timestep / guidance / pooled-text conditioning
//! (`CombinedTimestep[Guidance]TextProjEmbeddings`), the rotary position tables
//! (`FluxPosEmbed`, f64 as diffusers computes them) and their application to queries and keys.

use crate::models::dit::embeddings::{TimestepEmbedding, TIMESTEP_PROJ_DIM};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

/// diffusers' `get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)`:
/// `[cos(t·f), sin(t·f)]` with `f_i = exp(−ln(10000)·i/half)`, in f32. `t`: `[B]`.
pub fn timestep_projection_shift0(timesteps: &Tensor) -> Result<Tensor> {
    let half = TIMESTEP_PROJ_DIM / 2;
    let log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?;
    let args = timesteps
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)
}

/// `PixArtAlphaTextProjection` with SiLU: the pooled CLIP embedding → the model width.
#[derive(Debug, Clone)]
struct TextProjection {
    linear_1: Linear,
    linear_2: Linear,
}

impl TextProjection {
    fn new(vb: VarBuilder, input: usize, hidden: usize) -> Result<Self> {
        Ok(TextProjection {
            linear_1: candle_nn::linear(input, hidden, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(hidden, hidden, vb.pp("linear_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// `time_text_embed`: timestep embedding (+ guidance embedding for dev) + pooled text.
#[derive(Debug, Clone)]
pub struct TimeTextEmbedding {
    timestep_embedder: TimestepEmbedding,
    guidance_embedder: Option<TimestepEmbedding>,
    text_embedder: TextProjection,
}

impl TimeTextEmbedding {
    pub fn new(vb: VarBuilder, hidden: usize, pooled_dim: usize, guidance: bool) -> Result<Self> {
        Ok(TimeTextEmbedding {
            timestep_embedder: TimestepEmbedding::new(vb.pp("timestep_embedder"), hidden)?,
            guidance_embedder: if guidance {
                Some(TimestepEmbedding::new(vb.pp("guidance_embedder"), hidden)?)
            } else {
                None
            },
            text_embedder: TextProjection::new(vb.pp("text_embedder"), pooled_dim, hidden)?,
        })
    }

    pub fn has_guidance(&self) -> bool {
        self.guidance_embedder.is_some()
    }

    /// `timesteps`, `guidance`: `[B]` already ×1000 (as the transformer scales them);
    /// `pooled`: `[B, pooled_dim]` in the model dtype. A model without a guidance embedder
    /// ignores `guidance`, as diffusers' pipeline passes none to it.
    pub fn forward(
        &self,
        timesteps: &Tensor,
        guidance: Option<&Tensor>,
        pooled: &Tensor,
    ) -> Result<Tensor> {
        let dtype = pooled.dtype();
        let mut emb = self
            .timestep_embedder
            .forward(&timestep_projection_shift0(timesteps)?.to_dtype(dtype)?)?;
        if let Some(embedder) = &self.guidance_embedder {
            let Some(guidance) = guidance else {
                candle_core::bail!("FLUX.1 with guidance embeds needs a guidance scale")
            };
            let g = embedder.forward(&timestep_projection_shift0(guidance)?.to_dtype(dtype)?)?;
            emb = (emb + g)?;
        }
        emb + self.text_embedder.forward(pooled)?
    }
}

/// The rotary tables for a sequence of position ids (`FluxPosEmbed`): `cos`, `sin`, each
/// `[S, head_dim]`, every frequency repeated twice (interleaved pairs).
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// The position ids FluxPipeline builds: `text_len` zero rows, then `(0, row, col)` for every
/// packed image token in row-major order.
pub fn position_ids(text_len: usize, rows: usize, cols: usize) -> Vec<[f64; 3]> {
    let text = std::iter::repeat_n([0.0; 3], text_len);
    let image = (0..rows).flat_map(|r| (0..cols).map(move |c| [0.0, r as f64, c as f64]));
    text.chain(image).collect()
}

/// `FluxPosEmbed(theta=10000, axes_dim)` on `ids`: per axis `get_1d_rotary_pos_embed` in f64
/// (freqs `1/θ^(2i/d)`, outer product with the positions, cos/sin, repeat-interleave),
/// concatenated over the axes and rounded to f32.
pub fn rope_tables(ids: &[[f64; 3]], axes: &[usize], device: &Device) -> Result<RopeTables> {
    let width: usize = axes.iter().sum();
    let mut cos = Vec::with_capacity(ids.len() * width);
    let mut sin = Vec::with_capacity(ids.len() * width);
    let freqs: Vec<Vec<f64>> = axes
        .iter()
        .map(|&dim| {
            (0..dim / 2)
                .map(|i| 1.0 / 10000f64.powf((2 * i) as f64 / dim as f64))
                .collect()
        })
        .collect();
    for id in ids {
        for (axis, f) in freqs.iter().enumerate() {
            // `pos = ids.float()`: positions are f32 before the f64 product.
            let pos = id[axis] as f32 as f64;
            for &freq in f {
                let angle = pos * freq;
                let (s, c) = angle.sin_cos();
                cos.extend([c as f32, c as f32]);
                sin.extend([s as f32, s as f32]);
            }
        }
    }
    let n = ids.len();
    Ok(RopeTables {
        cos: Tensor::from_vec(cos, (n, width), device)?,
        sin: Tensor::from_vec(sin, (n, width), device)?,
    })
}

/// diffusers' `apply_rotary_emb(x, (cos, sin), use_real_unbind_dim=-1)` on `x`: `[B, H, S, D]`,
/// tables `[S, D]`: `x·cos + rotate(x)·sin`, where `rotate` maps each pair `(a, b)` to `(−b, a)`;
/// computed in f32 and returned in `x`'s dtype.
pub fn apply_rope(x: &Tensor, rope: &RopeTables) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let pairs = xf.reshape((b, h, s, d / 2, 2))?;
    let real = pairs.narrow(D::Minus1, 0, 1)?;
    let imag = pairs.narrow(D::Minus1, 1, 1)?;
    let rotated = Tensor::cat(&[&imag.neg()?, &real], D::Minus1)?.reshape((b, h, s, d))?;
    let cos = rope.cos.to_dtype(DType::F32)?.reshape((1, 1, s, d))?;
    let sin = rope.sin.to_dtype(DType::F32)?.reshape((1, 1, s, d))?;
    (xf.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_each_pair_by_its_angle() {
        // One token at row 1, one axis pair per axis of width 2: angle = pos · 1.
        let ids = [[0.0, 1.0, 0.0]];
        let rope = rope_tables(&ids, &[2, 2, 2], &Device::Cpu).expect("tables");
        let x = Tensor::new(&[[[[1f32, 0., 1., 0., 1., 0.]]]], &Device::Cpu).expect("x");
        let y: Vec<f32> = apply_rope(&x, &rope)
            .expect("rope")
            .flatten_all()
            .expect("flat")
            .to_vec1()
            .expect("vec");
        let (s, c) = 1f64.sin_cos();
        let want = [1.0, 0.0, c as f32, s as f32, 1.0, 0.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn position_ids_put_the_text_first() {
        let ids = position_ids(2, 2, 3);
        assert_eq!(ids.len(), 8);
        assert_eq!(ids[1], [0.0; 3]);
        assert_eq!(ids[2 + 4], [0.0, 1.0, 1.0]);
    }
}
