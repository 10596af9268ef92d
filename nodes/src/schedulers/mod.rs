//! Noise schedulers with the timestep spacing, fields and defaults of the diffusers schedulers
//! of the same names: DPM-Solver (multistep), DDIM, Euler and flow-matching Euler (FLUX), set
//! up from a scheduler config.

pub mod common;
pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod flow_match;
pub mod karras;
pub mod table;

pub use config::{SchedulerConfig, SchedulerConfigError};

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Where a share of the sampling run lies on the timestep scale: ComfyUI's
/// `model_sampling.percent_to_sigma`, expressed as the model's timestep (for methods whose
/// windows are given as shares of the run, such as EasyCache).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShareMap {
    /// DDPM-style training schedules: share `p` is timestep `(1 − p)·(train − 1)` (sigma is
    /// monotonic in the timestep, so comparing timesteps is comparing sigmas).
    Discrete { train_steps: usize },
    /// Flow matching: share `p` is the unshifted time `1 − p` through the run's own shift,
    /// `σ = shift(1 − p)`, timestep `σ·train`.
    Flow {
        train_steps: usize,
        shift: flow_match::Shift,
    },
}

impl Default for ShareMap {
    fn default() -> Self {
        ShareMap::Discrete { train_steps: 1000 }
    }
}

impl ShareMap {
    /// The timestep at share `p` of the run; a share of 0 or less lies above every timestep
    /// and one of 1 or more below every one, as ComfyUI's mapping puts them.
    pub fn timestep_at(&self, share: f64) -> f64 {
        match *self {
            ShareMap::Discrete { train_steps } => {
                if share <= 0.0 {
                    f64::INFINITY
                } else if share >= 1.0 {
                    f64::NEG_INFINITY
                } else {
                    (1.0 - share) * (train_steps.saturating_sub(1)) as f64
                }
            }
            ShareMap::Flow { train_steps, shift } => {
                if share <= 0.0 {
                    train_steps as f64
                } else if share >= 1.0 {
                    f64::NEG_INFINITY
                } else {
                    shift.apply(1.0 - share) * train_steps as f64
                }
            }
        }
    }
}

/// Which scheduler a Sampler uses (the names used in workflow files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerKind {
    /// diffusers `DPMSolverMultistepScheduler` (by default dpmsolver++, order 2, midpoint).
    DpmSolverMultistep,
    /// diffusers `DDIMScheduler` (eta 0).
    Ddim,
    /// diffusers `EulerDiscreteScheduler`.
    Euler,
    /// diffusers `FlowMatchEulerDiscreteScheduler` (FLUX; velocity prediction).
    FlowMatchEuler,
}

impl SchedulerKind {
    /// Names as written in workflows, in palette order.
    pub const NAMES: &'static [&'static str] = &["dpm++2m", "ddim", "euler", "flow-euler"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dpm++2m" => Some(SchedulerKind::DpmSolverMultistep),
            "ddim" => Some(SchedulerKind::Ddim),
            "euler" => Some(SchedulerKind::Euler),
            "flow-euler" => Some(SchedulerKind::FlowMatchEuler),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::DpmSolverMultistep => "dpm++2m",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::FlowMatchEuler => "flow-euler",
        }
    }

    /// The diffusers class this kind is.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::FlowMatchEuler => "FlowMatchEulerDiscreteScheduler",
        }
    }

    /// The kind of a diffusers class name (`_class_name` of a scheduler config).
    pub fn from_class_name(class: &str) -> Option<Self> {
        [
            SchedulerKind::DpmSolverMultistep,
            SchedulerKind::Ddim,
            SchedulerKind::Euler,
            SchedulerKind::FlowMatchEuler,
        ]
        .into_iter()
        .find(|k| k.class_name() == class)
    }

    /// Checks that this class can be built from `config` (every field it has).
    pub fn check_config(
        self,
        config: &SchedulerConfig,
    ) -> std::result::Result<(), SchedulerConfigError> {
        match self {
            SchedulerKind::DpmSolverMultistep => {
                dpm_solver::DpmOptions::from_config(config).map(|_| ())
            }
            SchedulerKind::Ddim => ddim::DdimOptions::from_config(config).map(|_| ()),
            SchedulerKind::Euler => euler::EulerOptions::from_config(config).map(|_| ()),
            SchedulerKind::FlowMatchEuler => {
                flow_match::FlowMatchOptions::from_config(config).map(|_| ())
            }
        }
    }

    /// The class a pipeline's scheduler config names (the Sampler's `auto`), else
    /// DPM-Solver++.
    pub fn auto_for(config: &SchedulerConfig) -> SchedulerKind {
        config
            .class_name()
            .and_then(SchedulerKind::from_class_name)
            .unwrap_or(SchedulerKind::DpmSolverMultistep)
    }

    /// Where shares of a run lie on this class's timestep scale (see [`ShareMap`]), for an
    /// image of `image_seq_len` tokens.
    pub fn share_map(
        self,
        config: &SchedulerConfig,
        image_seq_len: Option<usize>,
    ) -> std::result::Result<ShareMap, SchedulerConfigError> {
        Ok(match self {
            SchedulerKind::FlowMatchEuler => {
                let options = flow_match::FlowMatchOptions::from_config(config)?;
                let tokens = image_seq_len.unwrap_or(options.base_image_seq_len);
                ShareMap::Flow {
                    train_steps: options.train_steps,
                    shift: options.shift_for(tokens),
                }
            }
            _ => ShareMap::Discrete {
                train_steps: config.usize_or("num_train_timesteps", 1000)?,
            },
        })
    }

    /// A fresh scheduler of this class for `steps` inference steps, with the fields of
    /// `config` it has (as diffusers' `Class.from_config(config)`; other fields are ignored).
    pub fn build(
        self,
        steps: usize,
        config: &SchedulerConfig,
    ) -> std::result::Result<Box<dyn Scheduler>, SchedulerConfigError> {
        self.build_for(steps, config, None)
    }

    /// [`SchedulerKind::build`] for an image of `image_seq_len` tokens: the resolution-dependent
    /// shift of flow matching needs it (FluxPipeline's `calculate_shift`); the other classes
    /// ignore it.
    pub fn build_for(
        self,
        steps: usize,
        config: &SchedulerConfig,
        image_seq_len: Option<usize>,
    ) -> std::result::Result<Box<dyn Scheduler>, SchedulerConfigError> {
        Ok(match self {
            SchedulerKind::DpmSolverMultistep => {
                Box::new(dpm_solver::DpmSolverMultistep::with_options(
                    dpm_solver::DpmOptions::from_config(config)?,
                    steps,
                ))
            }
            SchedulerKind::Ddim => {
                let options = ddim::DdimOptions::from_config(config)?;
                let train = options.common.train.table.train_steps();
                if steps > train {
                    return Err(config.steps_error(format!(
                        "DDIM cannot run {steps} steps: num_train_timesteps is {train}"
                    )));
                }
                Box::new(ddim::Ddim::with_options(options, steps))
            }
            SchedulerKind::Euler => Box::new(euler::Euler::with_options(
                euler::EulerOptions::from_config(config)?,
                steps,
            )),
            SchedulerKind::FlowMatchEuler => {
                let options = flow_match::FlowMatchOptions::from_config(config)?;
                let tokens = match (options.dynamic_shifting, image_seq_len) {
                    (_, Some(n)) => n,
                    (false, None) => options.base_image_seq_len,
                    (true, None) => {
                        return Err(config.steps_error(
                            "dynamic shifting needs the image size (its token count)",
                        ))
                    }
                };
                Box::new(flow_match::FlowMatchEuler::with_options(
                    &options, steps, tokens,
                ))
            }
        })
    }
}

/// One denoising schedule. `step_index` runs over `0..timesteps().len()` in order.
pub trait Scheduler: Send {
    /// The timesteps the model is called with, first to last.
    fn timesteps(&self) -> &[f64];
    /// One sigma per timestep plus the final one (empty for DDIM, which has none).
    fn sigmas(&self) -> &[f64] {
        &[]
    }
    /// Multiplier for the initial Gaussian noise.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Input scaling before the model call (identity except for Euler).
    fn scale_model_input(&self, sample: &Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }
    /// Advances `sample` by one step given the model's output (ε, x₀ or v, as the config's
    /// `prediction_type` says).
    fn step(&mut self, model_output: &Tensor, step_index: usize, sample: &Tensor)
        -> Result<Tensor>;
}
