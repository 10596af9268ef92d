//! Image quality against a reference: PSNR and SSIM (cached run vs. uncached run).

pub mod psnr;
pub mod ssim;

pub use psnr::psnr;
pub use ssim::ssim;

/// Why two images cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("images differ in size: {0}×{1} vs {2}×{3}")]
    Size(u32, u32, u32, u32),
    #[error("image buffer does not hold width × height × 3 bytes")]
    Buffer,
    #[error("SSIM needs images of at least {0}×{0} pixels")]
    TooSmall(usize),
}

use crate::image::RgbImage;

/// Checks that `a` and `b` can be compared pixel by pixel; returns (width, height).
pub(crate) fn same_size(a: &RgbImage, b: &RgbImage) -> Result<(usize, usize), MetricError> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(MetricError::Size(a.width, a.height, b.width, b.height));
    }
    let (w, h) = (a.width as usize, a.height as usize);
    if a.pixels.len() != w * h * 3 || b.pixels.len() != w * h * 3 {
        return Err(MetricError::Buffer);
    }
    Ok((w, h))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::image::RgbImage;

    /// The images of `tools/metrics_reference.py` (32×24).
    pub fn image(f: impl Fn(i64, i64, i64) -> i64) -> RgbImage {
        let (w, h) = (32, 24);
        let mut pixels = Vec::with_capacity(w * h * 3);
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                for c in 0..3 {
                    pixels.push(f(x, y, c).clamp(0, 255) as u8);
                }
            }
        }
        RgbImage::new(w as u32, h as u32, pixels).expect("image")
    }

    pub fn a() -> RgbImage {
        image(|x, y, c| (x * 7 + y * 13 + c * 29) % 256)
    }

    pub fn b() -> RgbImage {
        image(|x, y, c| (x * 7 + y * 13 + c * 29) % 256 + (x * y + c) % 11 - 5)
    }

    pub fn d() -> RgbImage {
        image(|x, y, c| (x * x + y * 3 + c * 50) % 256)
    }
}
