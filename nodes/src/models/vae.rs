//! The diffusers `AutoencoderKL` decoder: latents → RGB, with the pipeline's `scaling_factor`
//! and `shift_factor` (4-channel SD/DiT latents and 16-channel FLUX latents alike), and
//! diffusers' tiled decode for large images. The network is candle-transformers'
//! `stable_diffusion::vae`, which loads diffusers' tensor names unchanged.

use crate::image::convert::{image_from_tensor, images_from_pixel_tensor};
use crate::image::{ImageError, RgbImage};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::Deserialize;

/// `vae/config.json`, the fields the decoder needs (diffusers' names and defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// The image side the VAE was trained on: the tile size of a tiled decode.
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    /// FLUX's VAE sets it; SD's and DiT's have none.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
}

fn default_channels() -> usize {
    3
}
fn default_layers() -> usize {
    1
}
fn default_latent_channels() -> usize {
    4
}
fn default_groups() -> usize {
    32
}
fn default_sample_size() -> usize {
    32
}
fn default_scaling() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

/// diffusers' `tile_overlap_factor`.
const TILE_OVERLAP: f64 = 0.25;

impl VaeConfig {
    /// Refuses what would make the network fail or panic while it is built.
    pub fn check(&self) -> std::result::Result<(), String> {
        let Some(&last) = self.block_out_channels.last() else {
            return Err("block_out_channels is empty".into());
        };
        if self.block_out_channels.len() > 8 {
            return Err(format!(
                "{} down/up blocks (block_out_channels); at most 8 are read",
                self.block_out_channels.len()
            ));
        }
        let groups = self.norm_num_groups;
        if groups == 0 {
            return Err("norm_num_groups is 0".into());
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || c % groups != 0)
        {
            return Err(format!(
                "block_out_channels {c} is not a positive multiple of norm_num_groups {groups}"
            ));
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("sample_size", self.sample_size),
        ] {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        let widest = self
            .block_out_channels
            .iter()
            .copied()
            .max()
            .unwrap_or(last);
        if self.layers_per_block > 16 || widest > 1 << 14 || self.latent_channels > 1 << 10 {
            return Err("layers_per_block or block_out_channels is implausibly large".into());
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!(
                "scaling_factor {} is not positive",
                self.scaling_factor
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err("shift_factor is not finite".into());
        }
        Ok(())
    }

    /// Image pixels per latent pixel: 2^(blocks − 1).
    pub fn downscale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The latent side of one tile (diffusers' `tile_latent_min_size`).
    pub fn tile_latent(&self) -> usize {
        (self.sample_size / self.downscale()).max(1)
    }
}

/// A loaded VAE (decoder and encoder, as diffusers saves them).
#[derive(Debug)]
pub struct Vae {
    config: VaeConfig,
    model: AutoEncoderKL,
    /// The weights' dtype: the decoder's input is cast to it.
    dtype: DType,
    /// Bytes of weights held (encoder and decoder).
    weight_bytes: u64,
}

impl Vae {
    /// `weight_bytes`: what the weights take in memory (the loader counted them).
    pub fn new(config: &VaeConfig, vb: VarBuilder, weight_bytes: u64) -> Result<Self> {
        config.check().map_err(candle_core::Error::msg)?;
        let inner = AutoEncoderKLConfig {
            block_out_channels: config.block_out_channels.clone(),
            layers_per_block: config.layers_per_block,
            latent_channels: config.latent_channels,
            norm_num_groups: config.norm_num_groups,
            use_quant_conv: config.use_quant_conv,
            use_post_quant_conv: config.use_post_quant_conv,
        };
        let dtype = vb.dtype();
        let model = AutoEncoderKL::new(vb, config.in_channels, config.out_channels, inner)?;
        Ok(Vae {
            config: config.clone(),
            model,
            dtype,
            weight_bytes,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Latents as the transformer gives them → the decoder's input (diffusers' pipelines:
    /// `latents / scaling_factor + shift_factor`).
    pub fn unscale(&self, latents: &Tensor) -> Result<Tensor> {
        let x = (latents / self.config.scaling_factor)?;
        match self.config.shift_factor {
            Some(shift) => x + shift,
            None => Ok(x),
        }
    }

    /// Decodes transformer latents `[B, latent_channels, h, w]` to images in `[-1, 1]`,
    /// `[B, out_channels, h·s, w·s]`. Latents larger than one tile are decoded in overlapping
    /// tiles blended as diffusers' `tiled_decode` does, when `tiled` is set.
    pub fn decode(&self, latents: &Tensor, tiled: bool) -> Result<Tensor> {
        let z = self.unscale(&latents.to_dtype(self.dtype)?)?;
        let (_, _, h, w) = z.dims4()?;
        let tile = self.config.tile_latent();
        if tiled && (h > tile || w > tile) {
            self.tiled_decode(&z)
        } else {
            self.decode_items(&z)
        }
    }

    /// One batch item at a time: candle-transformers 0.11.1's VAE attention block computes
    /// wrong values for a batch of more than one (measured: 4 % off diffusers at batch 2,
    /// 3e-8 at batch 1), so the batch is split here.
    fn decode_items(&self, z: &Tensor) -> Result<Tensor> {
        let batch = z.dim(0)?;
        if batch == 1 {
            return self.model.decode(z);
        }
        let items = (0..batch)
            .map(|i| self.model.decode(&z.narrow(0, i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&items, 0)
    }

    /// diffusers `AutoencoderKL.tiled_decode`: tiles of `tile_latent` latents every
    /// `tile_latent · (1 − 0.25)`, each blended into its upper and left neighbours over a
    /// quarter of the tile and cropped to the stride. The blending works in place on the
    /// tiles, as diffusers' does, so later tiles see their neighbours already blended.
    fn tiled_decode(&self, z: &Tensor) -> Result<Tensor> {
        let tile = self.config.tile_latent();
        let sample = self.config.sample_size;
        let overlap = ((tile as f64) * (1.0 - TILE_OVERLAP)) as usize;
        let blend = ((sample as f64) * TILE_OVERLAP) as usize;
        let limit = sample - blend;
        let (_, _, h, w) = z.dims4()?;
        let stride = overlap.max(1);
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..h).step_by(stride) {
            let mut row = Vec::new();
            for j in (0..w).step_by(stride) {
                let part = z
                    .narrow(2, i, tile.min(h - i))?
                    .narrow(3, j, tile.min(w - j))?;
                row.push(self.decode_items(&part)?);
            }
            rows.push(row);
        }
        let mut out_rows = Vec::with_capacity(rows.len());
        for i in 0..rows.len() {
            let mut out_row = Vec::with_capacity(rows[i].len());
            for j in 0..rows[i].len() {
                let mut t = rows[i][j].clone();
                if i > 0 {
                    t = blend_v(&rows[i - 1][j], &t, blend)?;
                }
                if j > 0 {
                    t = blend_h(&rows[i][j - 1], &t, blend)?;
                }
                rows[i][j] = t.clone();
                let (_, _, th, tw) = t.dims4()?;
                out_row.push(t.narrow(2, 0, limit.min(th))?.narrow(3, 0, limit.min(tw))?);
            }
            out_rows.push(Tensor::cat(&out_row, 3)?);
        }
        Tensor::cat(&out_rows, 2)
    }
}

/// The first `extent` rows of `b` fade in from the last rows of `a` (diffusers `blend_v`).
fn blend_v(a: &Tensor, b: &Tensor, extent: usize) -> Result<Tensor> {
    blend(a, b, extent, 2)
}

/// The same across columns (diffusers `blend_h`).
fn blend_h(a: &Tensor, b: &Tensor, extent: usize) -> Result<Tensor> {
    blend(a, b, extent, 3)
}

/// `b[.., y, ..] = a[.., −extent + y, ..]·(1 − y/extent) + b[.., y, ..]·(y/extent)` for
/// `y < extent` along `dim`, the rest of `b` unchanged.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let len_a = a.dim(dim)?;
    let len_b = b.dim(dim)?;
    let tail = a.narrow(dim, len_a - extent, extent)?;
    let head = b.narrow(dim, 0, extent)?;
    // The weights y / extent and 1 − y / extent in f64, as Python computes them, then cast.
    let weights = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
        let w: Vec<f32> = (0..extent)
            .map(|y| f(y as f64 / extent as f64) as f32)
            .collect();
        let mut shape = vec![1usize; b.rank()];
        shape[dim] = extent;
        Tensor::from_vec(w, shape, b.device())?.to_dtype(b.dtype())
    };
    let ramp = weights(&|r| r)?;
    let keep = weights(&|r| 1.0 - r)?;
    let mixed = (tail.broadcast_mul(&keep)? + head.broadcast_mul(&ramp)?)?;
    if len_b == extent {
        return Ok(mixed);
    }
    Tensor::cat(&[&mixed, &b.narrow(dim, extent, len_b - extent)?], dim)
}

/// The images of a sample: through `vae` when the model has one (tiled when larger than one
/// VAE tile), else the pixels, or the latent preview of a latent model.
pub fn images_of(
    vae: Option<&Vae>,
    sample: &Tensor,
) -> std::result::Result<Vec<RgbImage>, ImageError> {
    match vae {
        Some(vae) => images_from_pixel_tensor(&vae.decode(sample, true)?),
        None => image_from_tensor(sample),
    }
}
