//! diffusers `EulerDiscreteScheduler` with its defaults: `timestep_spacing="linspace"`,
//! linear sigma interpolation, `final_sigmas_type="zero"`, no churn, epsilon prediction.

use super::table::{interp, linspace, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct Euler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl Euler {
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        let steps = steps.max(1);
        let last = table.train_steps() as f64 - 1.0;
        // np.linspace(0, T-1, N, dtype=float32)[::-1]: fractional timesteps.
        let mut timesteps: Vec<f64> = linspace(0.0, last, steps)
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect();
        timesteps.reverse();
        let base = table.sigmas();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(&base, t) as f32 as f64)
            .collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        Euler {
            timesteps,
            sigmas,
            // diffusers: plain max σ for "linspace"/"trailing" spacing (√(σ²+1) only for "leading").
            init_noise_sigma: max_sigma,
        }
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(&mut self, eps: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        if i + 1 >= self.sigmas.len() {
            candle_core::bail!("Euler: step {i} is past the last step");
        }
        let sigma = self.sigmas[i];
        let dt = self.sigmas[i + 1] - sigma;
        // As diffusers: x0 = x − σ·ε, derivative = (x − x0)/σ, x' = x + derivative·dt.
        let x0 = (sample - (eps * sigma)?)?;
        let derivative = ((sample - x0)? / sigma)?;
        sample + (derivative * dt)?
    }
}
