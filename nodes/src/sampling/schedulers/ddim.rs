//! diffusers `DDIMScheduler` with eta = 0, `timestep_spacing="leading"`, `set_alpha_to_one=True`,
//! `clip_sample=False` (DiT's scheduler config), epsilon prediction.

use super::table::{round_half_even, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct Ddim {
    table: NoiseTable,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // num_inference_steps`, which diffusers uses to find the previous
    /// timestep whatever the spacing.
    step_ratio: usize,
}

impl Ddim {
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        let steps = steps.max(1);
        let step_ratio = table.train_steps() / steps;
        // "leading": (arange(0, N) * ratio).round()[::-1]
        let timesteps = (0..steps)
            .rev()
            .map(|i| round_half_even((i * step_ratio) as f64))
            .collect();
        Ddim {
            table,
            timesteps,
            step_ratio,
        }
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, eps: &Tensor, step_index: usize, sample: &Tensor) -> Result<Tensor> {
        let t = self.timesteps.get(step_index).copied().unwrap_or(0.0) as i64;
        let prev_t = t - self.step_ratio as i64;
        let ac = &self.table.alphas_cumprod;
        let alpha_t = ac[(t.max(0) as usize).min(ac.len() - 1)];
        // set_alpha_to_one: past the first training step the previous alpha is 1.
        let alpha_prev = if prev_t >= 0 {
            ac[(prev_t as usize).min(ac.len() - 1)]
        } else {
            1.0
        };
        let beta_t = 1.0 - alpha_t;
        let pred_x0 = ((sample - (eps * beta_t.sqrt())?)? / alpha_t.sqrt())?;
        let direction = (eps * (1.0 - alpha_prev).sqrt())?;
        (pred_x0 * alpha_prev.sqrt())? + direction
    }
}
