//! diffusers `FlowMatchEulerDiscreteScheduler` as `FluxPipeline` sets it up: sigmas
//! `linspace(1, 1/N, N)` shifted by the resolution-dependent `mu` (dynamic shifting, FLUX.1-dev)
//! or by the fixed `shift` (FLUX.1-schnell), timesteps `σ·1000`, and the Euler step
//! `x + (σₙₑₓₜ − σ)·v`. The arithmetic is f32 where diffusers' is (numpy f32 arrays).

use super::config::{SchedulerConfig, SchedulerConfigError};
use super::table::linspace;
use super::Scheduler;
use candle_core::{Result, Tensor};

/// `time_shift_type`: how `mu` bends the sigmas under dynamic shifting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeShift {
    /// `e^μ / (e^μ + (1/σ − 1))` (the default).
    Exponential,
    /// `μ / (μ + (1/σ − 1))`.
    Linear,
}

/// The `FlowMatchEulerDiscreteScheduler` fields, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchOptions {
    pub train_steps: usize,
    /// The fixed shift, used when dynamic shifting is off.
    pub shift: f64,
    pub dynamic_shifting: bool,
    pub base_shift: f64,
    pub max_shift: f64,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub time_shift: TimeShift,
}

impl FlowMatchOptions {
    /// The fields `FlowMatchEulerDiscreteScheduler.__init__` takes (diffusers 0.42.1); the ones
    /// this app does not implement are refused by name.
    pub fn from_config(c: &SchedulerConfig) -> std::result::Result<Self, SchedulerConfigError> {
        for (field, what) in [
            ("invert_sigmas", "inverted sigmas"),
            ("use_karras_sigmas", "Karras sigmas"),
            ("use_exponential_sigmas", "exponential sigmas"),
            ("use_beta_sigmas", "beta sigmas"),
            ("stochastic_sampling", "stochastic sampling"),
            ("use_flow_sigmas", "flow sigmas"),
        ] {
            c.refuse_true(field, what)?;
        }
        if c.f64_opt("shift_terminal")?.is_some() {
            return Err(c.field_error("shift_terminal", "terminal shift is not implemented"));
        }
        let options = FlowMatchOptions {
            train_steps: c.usize_or("num_train_timesteps", 1000)?,
            shift: c.f64_or("shift", 1.0)?,
            dynamic_shifting: c.bool_or("use_dynamic_shifting", false)?,
            base_shift: c.f64_opt("base_shift")?.unwrap_or(0.5),
            max_shift: c.f64_opt("max_shift")?.unwrap_or(1.15),
            base_image_seq_len: c.usize_or("base_image_seq_len", 256)?,
            max_image_seq_len: c.usize_or("max_image_seq_len", 4096)?,
            time_shift: c.choice_or(
                "time_shift_type",
                TimeShift::Exponential,
                &[
                    ("exponential", TimeShift::Exponential),
                    ("linear", TimeShift::Linear),
                ],
            )?,
        };
        if options.train_steps == 0 {
            return Err(c.field_error("num_train_timesteps", "must be at least 1"));
        }
        if !(options.shift.is_finite() && options.shift > 0.0) {
            return Err(c.field_error("shift", "must be a positive number"));
        }
        if options.max_image_seq_len == options.base_image_seq_len {
            return Err(c.field_error(
                "max_image_seq_len",
                "must differ from base_image_seq_len (the shift is a line through both)",
            ));
        }
        Ok(options)
    }

    /// FluxPipeline's `calculate_shift`: `mu` on the line through (base length, base shift)
    /// and (max length, max shift), at `image_seq_len` image tokens.
    pub fn mu(&self, image_seq_len: usize) -> f64 {
        let m = (self.max_shift - self.base_shift)
            / (self.max_image_seq_len as f64 - self.base_image_seq_len as f64);
        let b = self.base_shift - m * self.base_image_seq_len as f64;
        image_seq_len as f64 * m + b
    }
}

/// How a run's sigmas are bent (the shift of [`FlowMatchEuler`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// Dynamic shifting, `e^μ / (e^μ + (1/σ − 1))`.
    Exponential(f64),
    /// Dynamic shifting, `μ / (μ + (1/σ − 1))`.
    Linear(f64),
    /// `s·σ / (1 + (s − 1)·σ)`.
    Fixed(f64),
}

impl Shift {
    /// The shifted sigma of the unshifted `sigma` (in f64).
    pub fn apply(self, sigma: f64) -> f64 {
        let bend = 1.0 / sigma - 1.0;
        match self {
            Shift::Exponential(mu) => mu.exp() / (mu.exp() + bend),
            Shift::Linear(mu) => mu / (mu + bend),
            Shift::Fixed(s) => s * sigma / (1.0 + (s - 1.0) * sigma),
        }
    }
}

impl FlowMatchOptions {
    /// The shift of a run on an image of `image_seq_len` tokens.
    pub fn shift_for(&self, image_seq_len: usize) -> Shift {
        if !self.dynamic_shifting {
            return Shift::Fixed(self.shift);
        }
        let mu = self.mu(image_seq_len);
        match self.time_shift {
            TimeShift::Exponential => Shift::Exponential(mu),
            TimeShift::Linear => Shift::Linear(mu),
        }
    }
}

/// The scheduler for one run.
#[derive(Debug, Clone)]
pub struct FlowMatchEuler {
    timesteps: Vec<f64>,
    /// One per timestep and the final 0.
    sigmas: Vec<f64>,
}

impl FlowMatchEuler {
    /// `set_timesteps(sigmas=linspace(1, 1/N, N), mu=calculate_shift(image_seq_len))` as
    /// FluxPipeline calls it.
    pub fn with_options(options: &FlowMatchOptions, steps: usize, image_seq_len: usize) -> Self {
        let steps = steps.max(1);
        // np.linspace in f64, then np.array(sigmas).astype(np.float32).
        let base: Vec<f32> = linspace(1.0, 1.0 / steps as f64, steps)
            .into_iter()
            .map(|s| s as f32)
            .collect();
        let mu = options.mu(image_seq_len);
        // numpy 2 keeps an f32 array f32 against Python floats: every operation rounds to f32.
        let shifted: Vec<f32> = base
            .iter()
            .map(|&s| {
                if options.dynamic_shifting {
                    let bend = 1.0f32 / s - 1.0;
                    match options.time_shift {
                        TimeShift::Exponential => {
                            let e = mu.exp() as f32;
                            e / (e + bend)
                        }
                        TimeShift::Linear => {
                            let m = mu as f32;
                            m / (m + bend)
                        }
                    }
                } else {
                    let shift = options.shift as f32;
                    shift * s / (1.0 + (shift - 1.0) * s)
                }
            })
            .collect();
        let train = options.train_steps as f32;
        let timesteps = shifted.iter().map(|&s| (s * train) as f64).collect();
        let mut sigmas: Vec<f64> = shifted.iter().map(|&s| s as f64).collect();
        sigmas.push(0.0);
        FlowMatchEuler { timesteps, sigmas }
    }
}

impl Scheduler for FlowMatchEuler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// `prev = sample + (σᵢ₊₁ − σᵢ)·v`, with the difference taken in f32 as torch does.
    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let (Some(&sigma), Some(&next)) = (self.sigmas.get(i), self.sigmas.get(i + 1)) else {
            candle_core::bail!(
                "flow-match step {i} is past the schedule ({} steps)",
                self.timesteps.len()
            )
        };
        let dt = next as f32 - sigma as f32;
        sample + (model_output * dt as f64)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_config() -> SchedulerConfig {
        SchedulerConfig::parse(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
                "use_dynamic_shifting": true, "base_image_seq_len": 256,
                "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}"#,
            "test",
        )
        .expect("config")
    }

    #[test]
    fn mu_is_the_line_through_the_base_and_max_shifts() {
        let o = FlowMatchOptions::from_config(&dev_config()).expect("options");
        assert!((o.mu(256) - 0.5).abs() < 1e-12);
        assert!((o.mu(4096) - 1.15).abs() < 1e-12);
    }

    #[test]
    fn the_schedule_falls_from_one_to_zero() {
        let o = FlowMatchOptions::from_config(&dev_config()).expect("options");
        let s = FlowMatchEuler::with_options(&o, 4, 1024);
        assert_eq!(s.timesteps().len(), 4);
        assert_eq!(s.sigmas().len(), 5);
        assert_eq!(s.sigmas()[0], 1.0);
        assert_eq!(*s.sigmas().last().expect("final"), 0.0);
        assert!(s.sigmas().windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn unimplemented_fields_are_refused_by_name() {
        let c = SchedulerConfig::parse(r#"{"stochastic_sampling": true}"#, "test").expect("json");
        let e = FlowMatchOptions::from_config(&c).expect_err("refused");
        assert!(e.to_string().contains("stochastic_sampling"), "{e}");
    }
}
