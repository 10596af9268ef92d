//! Structural similarity (Wang et al. 2004) with the paper's settings, as scikit-image computes
//! it with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255`:
//! an 11-tap Gaussian window, the borders the window does not fit cropped, the mean over the
//! RGB channels.

use super::{same_size, MetricError};
use crate::image::RgbImage;

const SIGMA: f64 = 1.5;
/// `int(truncate·σ + 0.5)` with scikit-image's `truncate = 3.5`.
const RADIUS: usize = 5;
const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);

fn kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0.0; 2 * RADIUS + 1];
    for (i, w) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *w = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|w| *w /= sum);
    k
}

/// `Σ_i k[i]·at(i)`: one output of a 1-D pass.
fn tap(k: &[f64], at: impl Fn(usize) -> f64) -> f64 {
    k.iter().enumerate().map(|(i, w)| w * at(i)).sum()
}

/// Separable Gaussian filter, keeping only the positions where the whole window fits.
fn filter_valid(img: &[f64], w: usize, h: usize, k: &[f64]) -> Vec<f64> {
    let (ow, oh) = (w - 2 * RADIUS, h - 2 * RADIUS);
    let rows: Vec<f64> = (0..ow * h)
        .map(|j| tap(k, |i| img[(j / ow) * w + j % ow + i]))
        .collect();
    (0..ow * oh)
        .map(|j| tap(k, |i| rows[(j / ow + i) * ow + j % ow]))
        .collect()
}

/// Mean SSIM over the RGB channels; 1 for identical images.
pub fn ssim(reference: &RgbImage, test: &RgbImage) -> Result<f64, MetricError> {
    let (w, h) = same_size(reference, test)?;
    if w <= 2 * RADIUS || h <= 2 * RADIUS {
        return Err(MetricError::TooSmall(2 * RADIUS + 1));
    }
    let k = kernel();
    let mut total = 0.0;
    for c in 0..3 {
        let channel = |img: &RgbImage| -> Vec<f64> {
            img.pixels
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f64::from(v))
                .collect()
        };
        let (x, y) = (channel(reference), channel(test));
        let product =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(p, q)| p * q).collect() };
        let ux = filter_valid(&x, w, h, &k);
        let uy = filter_valid(&y, w, h, &k);
        let uxx = filter_valid(&product(&x, &x), w, h, &k);
        let uyy = filter_valid(&product(&y, &y), w, h, &k);
        let uxy = filter_valid(&product(&x, &y), w, h, &k);
        let n = ux.len() as f64;
        let sum: f64 = (0..ux.len())
            .map(|i| {
                let (mx, my) = (ux[i], uy[i]);
                let vx = uxx[i] - mx * mx;
                let vy = uyy[i] - my * my;
                let vxy = uxy[i] - mx * my;
                ((2.0 * mx * my + C1) * (2.0 * vxy + C2))
                    / ((mx * mx + my * my + C1) * (vx + vy + C2))
            })
            .sum();
        total += sum / n;
    }
    Ok(total / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::fixtures::{a, b, d, image};

    #[test]
    fn matches_scikit_image() {
        // tools/metrics_reference.py (scikit-image 0.25.2).
        assert!((ssim(&a(), &b()).expect("ssim") - 0.9944337771).abs() < 1e-9);
        assert!((ssim(&a(), &d()).expect("ssim") - 0.0791387535).abs() < 1e-9);
    }

    #[test]
    fn known_values() {
        assert!((ssim(&a(), &a()).expect("ssim") - 1.0).abs() < 1e-12);
        // Flat images: only the luminance term, (2ab + C1) / (a² + b² + C1).
        let flat = |v: i64| image(move |_, _, _| v);
        let expected = (2.0 * 100.0 * 110.0 + C1) / (100.0f64.powi(2) + 110.0f64.powi(2) + C1);
        assert!((ssim(&flat(100), &flat(110)).expect("ssim") - expected).abs() < 1e-12);
        let tiny = RgbImage::new(8, 8, vec![0; 192]).expect("img");
        assert_eq!(ssim(&tiny, &tiny), Err(MetricError::TooSmall(11)));
    }
}
