//! Peak signal-to-noise ratio of 8-bit RGB images (data range 255).

use super::{same_size, MetricError};
use crate::image::RgbImage;

/// `10·log10(255² / MSE)` over all pixels and channels; `+∞` for identical images.
pub fn psnr(reference: &RgbImage, test: &RgbImage) -> Result<f64, MetricError> {
    same_size(reference, test)?;
    let n = reference.pixels.len().max(1) as f64;
    let sse: f64 = reference
        .pixels
        .iter()
        .zip(&test.pixels)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let mse = sse / n;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::fixtures::{a, b, d, image};

    #[test]
    fn matches_scikit_image() {
        // tools/metrics_reference.py (scikit-image 0.25.2).
        assert!((psnr(&a(), &b()).expect("psnr") - 37.8356976336).abs() < 1e-9);
        assert!((psnr(&a(), &d()).expect("psnr") - 8.0431463998).abs() < 1e-9);
    }

    #[test]
    fn known_values() {
        assert_eq!(psnr(&a(), &a()).expect("psnr"), f64::INFINITY);
        // A constant offset of 1 everywhere: 20·log10(255).
        let one = image(|x, y, c| (x * 7 + y * 13 + c * 29) % 200 + 1);
        let base = image(|x, y, c| (x * 7 + y * 13 + c * 29) % 200);
        let expected = 20.0 * 255f64.log10();
        assert!((psnr(&base, &one).expect("psnr") - expected).abs() < 1e-12);
        let small = image(|_, _, _| 0);
        let other = crate::image::RgbImage::new(1, 1, vec![0, 0, 0]).expect("img");
        assert!(psnr(&small, &other).is_err());
    }
}
