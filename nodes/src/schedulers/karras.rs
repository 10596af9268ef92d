//! Karras et al. (2022) sigmas and diffusers' `_sigma_to_t`, which maps a sigma back to a
//! fractional training timestep through the log-sigma table.

use super::table::linspace;

/// `_convert_to_karras`: `n` sigmas from `sigma_max` to `sigma_min`, ρ = 7.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// `ln σ` of the training sigmas, in f32 as numpy takes the log of an f32 array.
pub fn log_sigmas(train_sigmas: &[f64]) -> Vec<f64> {
    train_sigmas
        .iter()
        .map(|&s| (s as f32).ln() as f64)
        .collect()
}

/// `_sigma_to_t`: the fractional timestep whose log-sigma `sigma` interpolates.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of the cumulative count of `log_sigma >= log_sigmas[i]`: the first index where
    // the count peaks (0 when it stays 0), capped at n − 2.
    let (mut count, mut best, mut low) = (0usize, 0usize, 0usize);
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls >= 0.0 {
            count += 1;
        }
        if count > best {
            best = count;
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}
