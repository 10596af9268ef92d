//! diffusers `DDIMScheduler` with eta = 0: every spacing, `steps_offset`, epsilon / sample /
//! v-prediction, `clip_sample` (+ range), `set_alpha_to_one`. DiT's config has
//! `clip_sample=False`, "leading" spacing, epsilon prediction.

use super::common::{CommonOptions, PredictionType, TimestepSpacing};
use super::config::{SchedulerConfig, SchedulerConfigError};
use super::table::{arange, linspace, round_half_even, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

/// The `DDIMScheduler` fields, resolved.
#[derive(Debug, Clone)]
pub struct DdimOptions {
    pub common: CommonOptions,
    /// `clip_sample_range` when `clip_sample` is on.
    pub clip_sample: Option<f64>,
    pub set_alpha_to_one: bool,
}

impl DdimOptions {
    /// The fields `DDIMScheduler.__init__` takes (diffusers 0.42.1), with its defaults.
    pub fn from_config(c: &SchedulerConfig) -> std::result::Result<Self, SchedulerConfigError> {
        let common = CommonOptions::from_config(c, TimestepSpacing::Leading, &[])?;
        // `dynamic_thresholding_ratio` and `sample_max_value` only matter with thresholding.
        c.refuse_true("thresholding", "DDIM dynamic thresholding")?;
        let clip = c.bool_or("clip_sample", true)?;
        let range = c.f64_or("clip_sample_range", 1.0)?;
        Ok(DdimOptions {
            common,
            clip_sample: clip.then_some(range),
            set_alpha_to_one: c.bool_or("set_alpha_to_one", true)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Ddim {
    table: NoiseTable,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // num_inference_steps`, which diffusers uses to find the previous
    /// timestep whatever the spacing.
    step_ratio: usize,
    prediction: PredictionType,
    clip_sample: Option<f64>,
    /// ᾱ before the first training step: 1, or ᾱ₀ without `set_alpha_to_one`.
    final_alpha_cumprod: f64,
}

impl Ddim {
    /// DiT's DDIM (see the module docs) on `table`.
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        Ddim::with_options(
            DdimOptions {
                common: CommonOptions::dit(table, TimestepSpacing::Leading),
                clip_sample: None,
                set_alpha_to_one: true,
            },
            steps,
        )
    }

    /// `set_timesteps(steps)` on a scheduler with `options`. (diffusers refuses more steps than
    /// training steps; `SchedulerKind::build` checks that.)
    pub fn with_options(options: DdimOptions, steps: usize) -> Self {
        let steps = steps.max(1);
        let table = options.common.train.table;
        let train = table.train_steps();
        let step_ratio = train / steps;
        let timesteps = match options.common.spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = linspace(0.0, train as f64 - 1.0, steps)
                    .into_iter()
                    .map(round_half_even)
                    .collect();
                t.reverse();
                t
            }
            // (arange(0, N) * ratio).round()[::-1] + steps_offset
            TimestepSpacing::Leading => (0..steps)
                .rev()
                .map(|i| {
                    round_half_even((i * step_ratio) as f64) + options.common.steps_offset as f64
                })
                .collect(),
            // round(arange(T, 0, -T / N)) - 1
            TimestepSpacing::Trailing => arange(train as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|t| round_half_even(t) - 1.0)
                .collect(),
        };
        let first_alpha = table.alphas_cumprod.first().copied().unwrap_or(1.0);
        Ddim {
            table,
            timesteps,
            step_ratio,
            prediction: options.common.prediction,
            clip_sample: options.clip_sample,
            final_alpha_cumprod: if options.set_alpha_to_one {
                1.0
            } else {
                first_alpha
            },
        }
    }

    /// `alphas_cumprod[t]` with torch's indexing: negative counts from the end (diffusers'
    /// "trailing" can produce -1), past the end is clamped.
    fn alpha_at(&self, t: i64) -> f64 {
        let ac = &self.table.alphas_cumprod;
        let n = ac.len() as i64;
        let i = if t < 0 { n + t } else { t };
        ac[i.clamp(0, n - 1) as usize]
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let t = self.timesteps.get(step_index).copied().unwrap_or(0.0) as i64;
        let prev_t = t - self.step_ratio as i64;
        let alpha_t = self.alpha_at(t);
        // Past the first training step the previous ᾱ is the final one.
        let alpha_prev = if prev_t >= 0 {
            self.alpha_at(prev_t)
        } else {
            self.final_alpha_cumprod
        };
        let beta_t = 1.0 - alpha_t;
        let (pred_x0, eps) = match self.prediction {
            PredictionType::Epsilon => {
                let x0 = ((sample - (model_output * beta_t.sqrt())?)? / alpha_t.sqrt())?;
                (x0, model_output.clone())
            }
            PredictionType::Sample => {
                let eps = ((sample - (model_output * alpha_t.sqrt())?)? / beta_t.sqrt())?;
                (model_output.clone(), eps)
            }
            PredictionType::VPrediction => {
                let x0 = ((sample * alpha_t.sqrt())? - (model_output * beta_t.sqrt())?)?;
                let eps = ((model_output * alpha_t.sqrt())? + (sample * beta_t.sqrt())?)?;
                (x0, eps)
            }
        };
        let pred_x0 = match self.clip_sample {
            Some(range) => pred_x0.clamp(-range, range)?,
            None => pred_x0,
        };
        let direction = (eps * (1.0 - alpha_prev).sqrt())?;
        (pred_x0 * alpha_prev.sqrt())? + direction
    }
}
