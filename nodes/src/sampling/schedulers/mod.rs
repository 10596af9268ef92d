//! Noise schedulers with the timestep spacing and defaults of the diffusers schedulers of the
//! same names: DPM-Solver++ (2M), DDIM and Euler.

pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod table;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which scheduler a Sampler uses (the names used in workflow files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerKind {
    /// diffusers `DPMSolverMultistepScheduler` (dpmsolver++, order 2, midpoint).
    DpmSolverMultistep,
    /// diffusers `DDIMScheduler` (eta 0, `clip_sample=False` as DiT's scheduler config).
    Ddim,
    /// diffusers `EulerDiscreteScheduler`.
    Euler,
}

impl SchedulerKind {
    /// Names as written in workflows, in palette order.
    pub const NAMES: &'static [&'static str] = &["dpm++2m", "ddim", "euler"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dpm++2m" => Some(SchedulerKind::DpmSolverMultistep),
            "ddim" => Some(SchedulerKind::Ddim),
            "euler" => Some(SchedulerKind::Euler),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
        }
    }

    /// A fresh scheduler set up for `steps` inference steps.
    pub fn build(self, steps: usize) -> Box<dyn Scheduler> {
        let table = table::NoiseTable::dit_default();
        match self {
            SchedulerKind::DpmSolverMultistep => {
                Box::new(dpm_solver::DpmSolverMultistep::new(table, steps))
            }
            SchedulerKind::Ddim => Box::new(ddim::Ddim::new(table, steps)),
            SchedulerKind::Euler => Box::new(euler::Euler::new(table, steps)),
        }
    }
}

/// One denoising schedule. `step_index` runs over `0..timesteps().len()` in order.
pub trait Scheduler: Send {
    /// The timesteps the model is called with, first to last.
    fn timesteps(&self) -> &[f64];
    /// Multiplier for the initial Gaussian noise.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Input scaling before the model call (identity except for Euler).
    fn scale_model_input(&self, sample: &Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }
    /// Advances `sample` by one step given the model's noise prediction.
    fn step(&mut self, model_output: &Tensor, step_index: usize, sample: &Tensor)
        -> Result<Tensor>;
}
