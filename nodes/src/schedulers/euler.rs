//! diffusers `EulerDiscreteScheduler` without churn: every spacing, linear or log-linear
//! sigma interpolation, Karras sigmas (with `sigma_min` / `sigma_max`), `final_sigmas_type`,
//! epsilon / v / sample prediction, continuous timesteps for v-prediction. Its defaults are
//! "linspace", linear interpolation, final sigma 0, discrete timesteps, epsilon.

use super::common::{CommonOptions, FinalSigma, PredictionType, TimestepSpacing};
use super::config::{SchedulerConfig, SchedulerConfigError};
use super::karras::{karras_sigmas, log_sigmas, sigma_to_t};
use super::table::{arange, interp, linspace, round_half_even, torch_linspace_f32, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

/// diffusers' `interpolation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Training sigmas interpolated at the timesteps.
    Linear,
    /// N + 1 sigmas evenly spaced in log σ from the largest to the smallest training sigma.
    LogLinear,
}

/// The `EulerDiscreteScheduler` fields, resolved.
#[derive(Debug, Clone)]
pub struct EulerOptions {
    pub common: CommonOptions,
    pub interpolation: Interpolation,
    pub karras: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigma: FinalSigma,
    /// `timestep_type="continuous"` with v-prediction: the model gets `0.25·ln σ`.
    pub continuous_timesteps: bool,
}

impl EulerOptions {
    /// The fields `EulerDiscreteScheduler.__init__` takes (diffusers 0.42.1).
    pub fn from_config(c: &SchedulerConfig) -> std::result::Result<Self, SchedulerConfigError> {
        let original_sample = [("original_sample", PredictionType::Sample)];
        let mut common =
            CommonOptions::from_config(c, TimestepSpacing::Linspace, &original_sample)?;
        if common.train.rescale_betas_zero_snr {
            common.train.table = common.train.table.with_finite_last_sigma();
        }
        let interpolation = c.choice_or(
            "interpolation_type",
            Interpolation::Linear,
            &[
                ("linear", Interpolation::Linear),
                ("log_linear", Interpolation::LogLinear),
            ],
        )?;
        c.refuse_true("use_exponential_sigmas", "exponential sigmas")?;
        c.refuse_true("use_beta_sigmas", "beta sigmas")?;
        let continuous = c.choice_or(
            "timestep_type",
            false,
            &[("discrete", false), ("continuous", true)],
        )?;
        Ok(EulerOptions {
            continuous_timesteps: continuous && common.prediction == PredictionType::VPrediction,
            common,
            interpolation,
            karras: c.bool_or("use_karras_sigmas", false)?,
            sigma_min: c.f64_opt("sigma_min")?,
            sigma_max: c.f64_opt("sigma_max")?,
            final_sigma: FinalSigma::from_config(c)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Euler {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl Euler {
    /// diffusers' defaults (see the module docs) on `table`.
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        Euler::with_options(
            EulerOptions {
                common: CommonOptions::dit(table, TimestepSpacing::Linspace),
                interpolation: Interpolation::Linear,
                karras: false,
                sigma_min: None,
                sigma_max: None,
                final_sigma: FinalSigma::Zero,
                continuous_timesteps: false,
            },
            steps,
        )
    }

    /// `set_timesteps(steps)` on a scheduler with `options`.
    pub fn with_options(options: EulerOptions, steps: usize) -> Self {
        let steps = steps.max(1);
        let table = &options.common.train.table;
        let train = table.train_steps();
        // Timesteps are f32 in diffusers.
        let mut timesteps: Vec<f64> = match options.common.spacing {
            // np.linspace(0, T-1, N, dtype=float32)[::-1]: fractional timesteps.
            TimestepSpacing::Linspace => linspace(0.0, train as f64 - 1.0, steps)
                .into_iter()
                .rev()
                .map(|t| t as f32 as f64)
                .collect(),
            // (arange(0, N) * (T // N)).round()[::-1] as float32, + steps_offset
            TimestepSpacing::Leading => {
                let ratio = train / steps;
                (0..steps)
                    .rev()
                    .map(|i| {
                        (round_half_even((i * ratio) as f64) as f32
                            + options.common.steps_offset as f32) as f64
                    })
                    .collect()
            }
            // arange(T, 0, -T / N).round() as float32, - 1
            TimestepSpacing::Trailing => arange(train as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|t| (round_half_even(t) as f32 - 1.0) as f64)
                .collect(),
        };
        let base = table.sigmas();
        let logs = log_sigmas(&base);
        let mut sigmas: Vec<f64> = match options.interpolation {
            Interpolation::Linear => timesteps.iter().map(|&t| interp(&base, t)).collect(),
            // torch.linspace(ln σ_max, ln σ_min, N + 1).exp(), all f32.
            Interpolation::LogLinear => torch_linspace_f32(logs[train - 1], logs[0], steps + 1)
                .into_iter()
                .map(|l| (l as f64).exp() as f32 as f64)
                .collect(),
        };
        if options.karras {
            let sigma_min = options
                .sigma_min
                .unwrap_or_else(|| sigmas.last().copied().unwrap_or(0.0));
            let sigma_max = options
                .sigma_max
                .unwrap_or_else(|| sigmas.first().copied().unwrap_or(0.0));
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &logs) as f32 as f64)
                .collect();
        }
        sigmas.push(options.final_sigma.value(&base));
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        if options.continuous_timesteps {
            timesteps = sigmas[..sigmas.len() - 1]
                .iter()
                .map(|&s| (0.25f32 * (s as f32).ln()) as f64)
                .collect();
        }
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        // diffusers: plain max σ for "linspace"/"trailing" spacing, √(σ²+1) (in f32) for "leading".
        let init_noise_sigma = match options.common.spacing {
            TimestepSpacing::Leading => {
                let m = max_sigma as f32;
                (m * m + 1.0).sqrt() as f64
            }
            _ => max_sigma,
        };
        Euler {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: options.common.prediction,
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

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let sigma = self.sigmas.get(i).copied().unwrap_or(0.0);
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        if i + 1 >= self.sigmas.len() {
            candle_core::bail!("Euler: step {i} is past the last step");
        }
        let sigma = self.sigmas[i];
        let dt = self.sigmas[i + 1] - sigma;
        // As diffusers: x0 from the prediction, derivative = (x − x0)/σ, x' = x + derivative·dt.
        let x0 = match self.prediction {
            PredictionType::Epsilon => (sample - (model_output * sigma)?)?,
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                ((model_output * c_out)? + (sample / (sigma * sigma + 1.0))?)?
            }
        };
        let derivative = ((sample - x0)? / sigma)?;
        sample + (derivative * dt)?
    }
}
