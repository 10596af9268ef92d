//! DiT embeddings: sinusoidal timestep projection, timestep+label conditioning, 2-D sin-cos
//! position embedding and the patch embedding. Each matches the diffusers function it names.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};

/// Width of the sinusoidal timestep projection (diffusers' `Timesteps(num_channels=256)`).
pub const TIMESTEP_PROJ_DIM: usize = 256;

/// diffusers' `get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1)`:
/// `[cos(t·f), sin(t·f)]` with `f_i = exp(-ln(10000)·i/(half-1))`, computed in f32. `t`: `[B]`.
pub fn timestep_projection(timesteps: &Tensor) -> Result<Tensor> {
    let half = TIMESTEP_PROJ_DIM / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f32).ln() * i as f32 / (half as f32 - 1.0);
            exponent.exp()
        })
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), timesteps.device())?;
    let args = timesteps
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)
}

/// diffusers' `TimestepEmbedding`: linear → SiLU → linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, hidden: usize) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: candle_nn::linear(TIMESTEP_PROJ_DIM, hidden, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(hidden, hidden, vb.pp("linear_2"))?,
        })
    }

    pub fn forward(&self, projection: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(projection)?.silu()?;
        self.linear_2.forward(&h)
    }
}

/// diffusers' `CombinedTimestepLabelEmbeddings`: timestep embedding + class embedding.
/// The class table has one extra row, the null class used for classifier-free guidance.
#[derive(Debug, Clone)]
pub struct TimestepLabelEmbedding {
    timestep_embedder: TimestepEmbedding,
    class_embedder: Embedding,
}

impl TimestepLabelEmbedding {
    pub fn new(vb: VarBuilder, num_classes: usize, hidden: usize) -> Result<Self> {
        let table = vb
            .pp("class_embedder")
            .get((num_classes + 1, hidden), "embedding_table.weight")?;
        Ok(TimestepLabelEmbedding {
            timestep_embedder: TimestepEmbedding::new(vb.pp("timestep_embedder"), hidden)?,
            class_embedder: Embedding::new(table, hidden),
        })
    }

    /// `projection`: `[B, 256]` from [`timestep_projection`] (already in the model dtype);
    /// `labels`: `[B]` u32. Returns the conditioning `[B, hidden]`.
    pub fn forward(&self, projection: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let t = self.timestep_embedder.forward(projection)?;
        let c = self.class_embedder.forward(labels)?;
        t + c
    }
}

/// diffusers' `get_1d_sincos_pos_embed_from_grid` (f64 frequencies): `[sin(p·ω), cos(p·ω)]`.
fn sincos_1d(dim: usize, positions: &[f32]) -> Vec<Vec<f64>> {
    let half = dim / 2;
    let omega: Vec<f64> = (0..half)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / (dim as f64 / 2.0)))
        .collect();
    positions
        .iter()
        .map(|&p| {
            let p = p as f64;
            let mut row: Vec<f64> = omega.iter().map(|w| (p * w).sin()).collect();
            row.extend(omega.iter().map(|w| (p * w).cos()));
            row
        })
        .collect()
}

/// diffusers' `get_2d_sincos_pos_embed(dim, (h, w), base_size, interpolation_scale=1)` as a
/// `[1, h·w, dim]` f32 tensor. Token `n = row·w + col`; the first half of each vector encodes
/// the column, the second half the row (diffusers' meshgrid puts w first).
pub fn sincos_2d(
    dim: usize,
    h: usize,
    w: usize,
    base_size: usize,
    device: &Device,
) -> Result<Tensor> {
    // Positions are computed in f32 like torch.arange(...) / (grid / base_size).
    let scaled = |n: usize| -> Vec<f32> {
        let ratio = n as f32 / base_size as f32;
        (0..n).map(|i| i as f32 / ratio).collect()
    };
    let cols = sincos_1d(dim / 2, &scaled(w));
    let rows = sincos_1d(dim / 2, &scaled(h));
    let mut data = Vec::with_capacity(h * w * dim);
    for row in &rows {
        for col in &cols {
            data.extend(col.iter().map(|&v| v as f32));
            data.extend(row.iter().map(|&v| v as f32));
        }
    }
    Tensor::from_vec(data, (1, h * w, dim), device)
}

/// diffusers' `PatchEmbed` (no layer norm): a stride-`p` convolution, done here as one matmul
/// over flattened patches, plus the fixed position embedding.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    /// `[hidden, C·p·p]`, the conv kernel flattened.
    weight: Tensor,
    bias: Tensor,
    patch: usize,
    hidden: usize,
    /// Grid side of the training resolution; also diffusers' `base_size`.
    base_grid: usize,
    /// Position embedding at the training resolution, in the model dtype.
    native_pos: Tensor,
    /// `Fused` may take the CPU kernels' path; training needs candle's ops for the gradients.
    pub(super) kernels: super::block::Kernels,
}

impl PatchEmbed {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        hidden: usize,
        patch: usize,
        sample_size: usize,
    ) -> Result<Self> {
        let proj = vb.pp("proj");
        let weight = proj
            .get((hidden, in_channels, patch, patch), "weight")?
            .reshape((hidden, in_channels * patch * patch))?;
        let bias = proj.get(hidden, "bias")?;
        let base_grid = sample_size / patch;
        let native_pos = sincos_2d(hidden, base_grid, base_grid, base_grid, vb.device())?
            .to_dtype(vb.dtype())?;
        Ok(PatchEmbed {
            weight,
            bias,
            patch,
            hidden,
            base_grid,
            native_pos,
            kernels: super::block::Kernels::Fused,
        })
    }

    /// `x`: `[B, C, H, W]` → tokens `[B, (H/p)·(W/p), hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, height, width) = x.dims4()?;
        let p = self.patch;
        let (h, w) = (height / p, width / p);
        let pos = if h == self.base_grid && w == self.base_grid {
            self.native_pos.clone()
        } else {
            sincos_2d(self.hidden, h, w, self.base_grid, x.device())?.to_dtype(x.dtype())?
        };
        if self.kernels == super::block::Kernels::Fused
            && super::cpu_io::applies(x)
            && super::cpu_io::applies(&self.weight)
        {
            return super::cpu_io::patch_embed(x, p, &self.weight, &self.bias, &pos);
        }
        let patches = x
            .reshape((b, c, h, p, w, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, h * w, c * p * p))?;
        let tokens = patches
            .broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?;
        tokens.broadcast_add(&pos)
    }
}
