//! Live previews through the pipeline's VAE every few steps (and on the last), the cheap
//! latent approximation in between.

use super::denoise::{preview_of, LatentPreview, Preview};
use crate::image::RgbImage;
use crate::models::vae::{images_of, Vae};
use candle_core::Tensor;
use std::sync::Arc;

/// Steps between two VAE previews.
pub const VAE_PREVIEW_EVERY: usize = 5;

pub struct VaePreview {
    vae: Arc<Vae>,
    every: usize,
    latent: LatentPreview,
}

impl VaePreview {
    pub fn new(vae: Arc<Vae>) -> Self {
        VaePreview {
            vae,
            every: VAE_PREVIEW_EVERY,
            latent: LatentPreview::default(),
        }
    }

    /// The first image of `x` through the VAE; none when it cannot be decoded.
    fn decode_first(&self, x: &Tensor) -> Option<Arc<RgbImage>> {
        let first = x.narrow(0, 0, 1).ok()?;
        images_of(Some(&self.vae), &first)
            .ok()?
            .into_iter()
            .next()
            .map(Arc::new)
    }
}

impl Preview for VaePreview {
    fn preview(&mut self, index: usize, total: usize, x: &Tensor) -> Option<Arc<RgbImage>> {
        if index + 1 == total || (index + 1).is_multiple_of(self.every) {
            return self.decode_first(x).or_else(|| preview_of(x));
        }
        // Latents with no colour approximation (16 channels) keep the last VAE preview.
        self.latent.preview(index, total, x)
    }
}
