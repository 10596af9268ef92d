//! diffusers `DPMSolverMultistepScheduler` with its defaults: `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"`, `lower_order_final=True`,
//! `final_sigmas_type="zero"`, `timestep_spacing="linspace"`, epsilon prediction.

use super::table::{interp, linspace, round_half_even, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    /// One sigma per timestep plus the final 0.
    sigmas: Vec<f64>,
    /// Data predictions (x0) of the last two steps, newest last.
    previous_x0: Vec<Tensor>,
    lower_order_nums: usize,
}

/// `(alpha_t, sigma_t)` of a Karras sigma: `alpha = 1/sqrt(σ²+1)`, `sigma = σ·alpha`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// Half log-SNR `λ = ln α − ln σ` (∞ at σ = 0).
fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl DpmSolverMultistep {
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        let steps = steps.max(1);
        let last = table.train_steps() as f64 - 1.0;
        // linspace(0, T-1, N+1).round()[::-1][:-1]
        let mut timesteps: Vec<f64> = linspace(0.0, last, steps + 1)
            .into_iter()
            .map(round_half_even)
            .collect();
        timesteps.reverse();
        timesteps.pop();
        let base = table.sigmas();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(&base, t) as f32 as f64)
            .collect();
        sigmas.push(0.0);
        DpmSolverMultistep {
            timesteps,
            sigmas,
            previous_x0: Vec::new(),
            lower_order_nums: 0,
        }
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl Scheduler for DpmSolverMultistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, eps: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let n = self.timesteps.len();
        if i + 1 >= self.sigmas.len() {
            candle_core::bail!("DPM-Solver++: step {i} is past the last step ({n})");
        }
        // With final_sigmas_type "zero" the last step is always first order. (diffusers'
        // `lower_order_second` only matters for order 3: order 2 stays second order there.)
        let lower_order_final = i == n - 1;

        let sigma_s0 = self.sigmas[i];
        let (alpha_s0, sig_s0) = alpha_sigma(sigma_s0);
        let x0 = ((sample - (eps * sig_s0)?)? / alpha_s0)?;
        self.previous_x0.push(x0.clone());
        if self.previous_x0.len() > 2 {
            self.previous_x0.remove(0);
        }

        let sigma_t = self.sigmas[i + 1];
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let phi = alpha_t * ((-h).exp() - 1.0);
        let first_order = self.lower_order_nums < 1 || lower_order_final;
        // Guard the ratio for σ_t = 0, where diffusers' 0·sample is 0 too.
        let ratio = if sig_s0 > 0.0 { sig_t / sig_s0 } else { 0.0 };
        let out = if first_order || self.previous_x0.len() < 2 {
            ((sample * ratio)? - (&x0 * phi)?)?
        } else {
            let m1 = &self.previous_x0[0];
            let sigma_s1 = self.sigmas[i - 1];
            let h0 = lambda(sigma_s0) - lambda(sigma_s1);
            let r0 = h0 / h;
            let d1 = ((&x0 - m1)? * (1.0 / r0))?;
            (((sample * ratio)? - (&x0 * phi)?)? - (d1 * (0.5 * phi))?)?
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        Ok(out)
    }
}
