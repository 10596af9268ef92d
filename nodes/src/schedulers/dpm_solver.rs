//! diffusers `DPMSolverMultistepScheduler`: `algorithm_type` dpmsolver++ (data prediction) or
//! dpmsolver (noise prediction), `solver_order` 1–3, `solver_type` midpoint / heun,
//! `lower_order_final`, `euler_at_final`, `final_sigmas_type`, Karras sigmas,
//! `lambda_min_clipped`, learned variance, every spacing and prediction type. Its defaults
//! (dpmsolver++, order 2, midpoint, "linspace", epsilon) are DPM-Solver++ 2M.

use super::common::{CommonOptions, FinalSigma, PredictionType, TimestepSpacing};
use super::config::{SchedulerConfig, SchedulerConfigError};
use super::karras::{karras_sigmas, log_sigmas, sigma_to_t};
use super::table::{arange, interp, linspace, round_half_even, BetaSchedule, NoiseTable};
use super::Scheduler;
use candle_core::{Result, Tensor};

/// What the solver integrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// "dpmsolver++" (and "deis", which diffusers maps to it): data prediction x₀.
    DpmSolverPlusPlus,
    /// "dpmsolver": noise prediction ε.
    DpmSolver,
}

/// diffusers' `solver_type` (only the second-order update differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// The `DPMSolverMultistepScheduler` fields, resolved.
#[derive(Debug, Clone)]
pub struct DpmOptions {
    pub common: CommonOptions,
    pub solver_order: usize,
    pub algorithm: Algorithm,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_sigma: FinalSigma,
    pub karras: bool,
    /// `sigma_min` / `sigma_max` of the file: diffusers keeps other classes' fields in the
    /// config, and its Karras conversion uses them when present.
    pub karras_range: (Option<f64>, Option<f64>),
    pub lambda_min_clipped: f64,
    /// `variance_type` "learned" / "learned_range": only the first 3 channels are ε.
    pub learned_variance: bool,
}

impl DpmOptions {
    /// The fields `DPMSolverMultistepScheduler.__init__` takes (diffusers 0.42.1).
    pub fn from_config(c: &SchedulerConfig) -> std::result::Result<Self, SchedulerConfigError> {
        let mut common = CommonOptions::from_config(c, TimestepSpacing::Linspace, &[])?;
        if common.train.rescale_betas_zero_snr {
            common.train.table = common.train.table.with_finite_last_sigma();
        }
        let solver_order = c.usize_or("solver_order", 2)?;
        if !(1..=3).contains(&solver_order) {
            return Err(c.field_error("solver_order", "supported here: 1, 2, 3"));
        }
        if c.str_opt("prediction_type")? == Some("flow_prediction") {
            return Err(c.field_error("prediction_type", "flow prediction is not implemented"));
        }
        c.refuse_true("thresholding", "DPM-Solver dynamic thresholding")?;
        let algorithm_name = c.str_opt("algorithm_type")?.unwrap_or("dpmsolver++");
        let algorithm = c.choice_or(
            "algorithm_type",
            Algorithm::DpmSolverPlusPlus,
            &[
                ("dpmsolver++", Algorithm::DpmSolverPlusPlus),
                ("dpmsolver", Algorithm::DpmSolver),
                ("deis", Algorithm::DpmSolverPlusPlus),
            ],
        )?;
        let solver_type = c.choice_or(
            "solver_type",
            SolverType::Midpoint,
            &[
                ("midpoint", SolverType::Midpoint),
                ("heun", SolverType::Heun),
                // diffusers maps the UniPC / DEIS names to midpoint.
                ("logrho", SolverType::Midpoint),
                ("bh1", SolverType::Midpoint),
                ("bh2", SolverType::Midpoint),
            ],
        )?;
        for (field, what) in [
            ("use_exponential_sigmas", "exponential sigmas"),
            ("use_beta_sigmas", "beta sigmas"),
            ("use_lu_lambdas", "Lu lambdas"),
            // `flow_shift`, `use_dynamic_shifting` and `time_shift_type` only act on flow sigmas.
            ("use_flow_sigmas", "flow sigmas"),
        ] {
            c.refuse_true(field, what)?;
        }
        let final_sigma = FinalSigma::from_config(c)?;
        // diffusers raises for these (the raw name: "deis" is refused too).
        if algorithm_name != "dpmsolver++" && final_sigma == FinalSigma::Zero {
            return Err(c.field_error(
                "final_sigmas_type",
                format!("\"zero\" needs algorithm_type dpmsolver++ (it is {algorithm_name:?})"),
            ));
        }
        let variance = c.str_or_null("variance_type")?;
        Ok(DpmOptions {
            common,
            solver_order,
            algorithm,
            solver_type,
            lower_order_final: c.bool_or("lower_order_final", true)?,
            euler_at_final: c.bool_or("euler_at_final", false)?,
            final_sigma,
            karras: c.bool_or("use_karras_sigmas", false)?,
            karras_range: (c.f64_opt("sigma_min")?, c.f64_opt("sigma_max")?),
            lambda_min_clipped: c.f64_or("lambda_min_clipped", f64::NEG_INFINITY)?,
            // Any other value (e.g. DDPM's "fixed_small") leaves the output whole, as in diffusers.
            learned_variance: matches!(variance, Some("learned" | "learned_range")),
        })
    }

    /// diffusers' defaults on `table`.
    fn dit(table: NoiseTable) -> Self {
        DpmOptions {
            common: CommonOptions::dit(table, TimestepSpacing::Linspace),
            solver_order: 2,
            algorithm: Algorithm::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigma: FinalSigma::Zero,
            karras: false,
            karras_range: (None, None),
            lambda_min_clipped: f64::NEG_INFINITY,
            learned_variance: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DpmSolverMultistep {
    options: DpmOptions,
    timesteps: Vec<f64>,
    /// One sigma per timestep plus the final one.
    sigmas: Vec<f64>,
    /// Converted model outputs (x₀ or ε) of the last `solver_order` steps, newest last.
    history: Vec<Tensor>,
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

/// How many training steps `lambda_min_clipped` leaves: diffusers'
/// `T − searchsorted(flip(λ_t), lambda_min_clipped)`, λ in f32 as torch keeps it.
fn last_timestep(table: &NoiseTable, lambda_min_clipped: f64) -> usize {
    let clipped = table
        .alphas_cumprod
        .iter()
        .filter(|&&a| {
            let (alpha, sigma) = ((a as f32).sqrt(), (1.0 - a as f32).sqrt());
            ((alpha.ln() - sigma.ln()) as f64) < lambda_min_clipped
        })
        .count();
    table.train_steps() - clipped
}

impl DpmSolverMultistep {
    /// diffusers' defaults (see the module docs) on `table`.
    pub fn new(table: NoiseTable, steps: usize) -> Self {
        DpmSolverMultistep::with_options(DpmOptions::dit(table), steps)
    }

    /// `set_timesteps(steps)` on a scheduler with `options`.
    pub fn with_options(options: DpmOptions, steps: usize) -> Self {
        let steps = steps.max(1);
        let table = &options.common.train.table;
        let train = table.train_steps();
        let last = last_timestep(table, options.lambda_min_clipped);
        let mut timesteps: Vec<f64> = match options.common.spacing {
            // linspace(0, last - 1, N + 1).round()[::-1][:-1]
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = linspace(0.0, last as f64 - 1.0, steps + 1)
                    .into_iter()
                    .map(round_half_even)
                    .collect();
                t.reverse();
                t.pop();
                t
            }
            // (arange(0, N + 1) * (last // (N + 1))).round()[::-1][:-1] + steps_offset
            TimestepSpacing::Leading => {
                let ratio = last / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| {
                        round_half_even((i * ratio) as f64) + options.common.steps_offset as f64
                    })
                    .collect()
            }
            // arange(last, 0, -T / N).round() - 1
            TimestepSpacing::Trailing => arange(last as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|t| round_half_even(t) - 1.0)
                .collect(),
        };
        let base = table.sigmas();
        let mut sigmas: Vec<f64> = if options.karras {
            let sigma_min = options.karras_range.0.unwrap_or(base[0]);
            let sigma_max = options.karras_range.1.unwrap_or(base[train - 1]);
            let karras = karras_sigmas(sigma_min, sigma_max, steps);
            let logs = log_sigmas(&base);
            // Rounded, except for squaredcos_cap_v2, whose timesteps the int64 cast truncates.
            let to_int = if options.common.train.beta_schedule == BetaSchedule::SquaredCosCapV2 {
                f64::trunc
            } else {
                round_half_even
            };
            timesteps = karras
                .iter()
                .map(|&s| to_int(sigma_to_t(s, &logs)))
                .collect();
            karras.into_iter().map(|s| s as f32 as f64).collect()
        } else {
            timesteps
                .iter()
                .map(|&t| interp(&base, t) as f32 as f64)
                .collect()
        };
        sigmas.push(options.final_sigma.value(&base));
        DpmSolverMultistep {
            options,
            timesteps,
            sigmas,
            history: Vec::new(),
            lower_order_nums: 0,
        }
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// `convert_model_output`: x₀ for dpmsolver++, ε for dpmsolver.
    fn convert(&self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let prediction = self.options.common.prediction;
        let model_output = if self.options.learned_variance && prediction == PredictionType::Epsilon
        {
            let channels = model_output.dim(1)?;
            model_output.narrow(1, 0, channels.min(3))?
        } else {
            model_output.clone()
        };
        match (self.options.algorithm, prediction) {
            (Algorithm::DpmSolverPlusPlus, PredictionType::Epsilon) => {
                (sample - (model_output * sigma_s)?)? / alpha_s
            }
            (Algorithm::DpmSolverPlusPlus, PredictionType::Sample) => Ok(model_output),
            (Algorithm::DpmSolverPlusPlus, PredictionType::VPrediction) => {
                (sample * alpha_s)? - (model_output * sigma_s)?
            }
            (Algorithm::DpmSolver, PredictionType::Epsilon) => Ok(model_output),
            (Algorithm::DpmSolver, PredictionType::Sample) => {
                (sample - (model_output * alpha_s)?)? / sigma_s
            }
            (Algorithm::DpmSolver, PredictionType::VPrediction) => {
                (model_output * alpha_s)? + (sample * sigma_s)?
            }
        }
    }

    fn first_order(&self, i: usize, m0: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let (alpha_s0, sig_s0) = alpha_sigma(self.sigmas[i]);
        let sigma_t = self.sigmas[i + 1];
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let h = lambda(sigma_t) - lambda(self.sigmas[i]);
        match self.options.algorithm {
            Algorithm::DpmSolverPlusPlus => {
                let phi = alpha_t * ((-h).exp() - 1.0);
                // Guard the ratio for σ_t = 0, where diffusers' 0·sample is 0 too.
                let ratio = if sig_s0 > 0.0 { sig_t / sig_s0 } else { 0.0 };
                (sample * ratio)? - (m0 * phi)?
            }
            Algorithm::DpmSolver => {
                let psi = sig_t * (h.exp() - 1.0);
                (sample * (alpha_t / alpha_s0))? - (m0 * psi)?
            }
        }
    }

    fn second_order(&self, i: usize, sample: &Tensor) -> Result<Tensor> {
        let n = self.history.len();
        let (m0, m1) = (&self.history[n - 1], &self.history[n - 2]);
        let (sigma_s0, sigma_s1, sigma_t) =
            (self.sigmas[i], self.sigmas[i - 1], self.sigmas[i + 1]);
        let (alpha_s0, sig_s0) = alpha_sigma(sigma_s0);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let h0 = lambda(sigma_s0) - lambda(sigma_s1);
        let r0 = h0 / h;
        let d1 = ((m0 - m1)? * (1.0 / r0))?;
        match (self.options.algorithm, self.options.solver_type) {
            (Algorithm::DpmSolverPlusPlus, solver) => {
                let phi = alpha_t * ((-h).exp() - 1.0);
                let ratio = if sig_s0 > 0.0 { sig_t / sig_s0 } else { 0.0 };
                let base = ((sample * ratio)? - (m0 * phi)?)?;
                match solver {
                    SolverType::Midpoint => base - (d1 * (0.5 * phi))?,
                    SolverType::Heun => base + (d1 * (alpha_t * (((-h).exp() - 1.0) / h + 1.0)))?,
                }
            }
            (Algorithm::DpmSolver, solver) => {
                let psi = sig_t * (h.exp() - 1.0);
                let base = ((sample * (alpha_t / alpha_s0))? - (m0 * psi)?)?;
                match solver {
                    SolverType::Midpoint => base - (d1 * (0.5 * psi))?,
                    SolverType::Heun => base - (d1 * (sig_t * ((h.exp() - 1.0) / h - 1.0)))?,
                }
            }
        }
    }

    fn third_order(&self, i: usize, sample: &Tensor) -> Result<Tensor> {
        let n = self.history.len();
        let (m0, m1, m2) = (
            &self.history[n - 1],
            &self.history[n - 2],
            &self.history[n - 3],
        );
        let (sigma_t, sigma_s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let (sigma_s1, sigma_s2) = (self.sigmas[i - 1], self.sigmas[i - 2]);
        let (alpha_s0, sig_s0) = alpha_sigma(sigma_s0);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let h0 = lambda(sigma_s0) - lambda(sigma_s1);
        let h1 = lambda(sigma_s1) - lambda(sigma_s2);
        let (r0, r1) = (h0 / h, h1 / h);
        let d1_0 = ((m0 - m1)? * (1.0 / r0))?;
        let d1_1 = ((m1 - m2)? * (1.0 / r1))?;
        let d1 = (&d1_0 + ((&d1_0 - &d1_1)? * (r0 / (r0 + r1)))?)?;
        let d2 = ((d1_0 - d1_1)? * (1.0 / (r0 + r1)))?;
        match self.options.algorithm {
            Algorithm::DpmSolverPlusPlus => {
                let e = (-h).exp() - 1.0;
                let ratio = if sig_s0 > 0.0 { sig_t / sig_s0 } else { 0.0 };
                let x = ((sample * ratio)? - (m0 * (alpha_t * e))?)?;
                let x = (x + (d1 * (alpha_t * (e / h + 1.0)))?)?;
                x - (d2 * (alpha_t * ((e + h) / (h * h) - 0.5)))?
            }
            Algorithm::DpmSolver => {
                let e = h.exp() - 1.0;
                let x = ((sample * (alpha_t / alpha_s0))? - (m0 * (sig_t * e))?)?;
                let x = (x - (d1 * (sig_t * (e / h - 1.0)))?)?;
                x - (d2 * (sig_t * ((e - h) / (h * h) - 0.5)))?
            }
        }
    }
}

impl Scheduler for DpmSolverMultistep {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn step(&mut self, model_output: &Tensor, i: usize, sample: &Tensor) -> Result<Tensor> {
        let n = self.timesteps.len();
        if i + 1 >= self.sigmas.len() {
            candle_core::bail!("DPM-Solver: step {i} is past the last step ({n})");
        }
        let o = &self.options;
        // Lower orders at the end, as diffusers ("for numerical stability at few steps").
        let lower_order_final = i == n - 1
            && (o.euler_at_final
                || (o.lower_order_final && n < 15)
                || o.final_sigma == FinalSigma::Zero);
        let lower_order_second = i + 2 == n && o.lower_order_final && n < 15;
        let order = o.solver_order;

        let converted = self.convert(model_output, i, sample)?;
        self.history.push(converted.clone());
        if self.history.len() > order {
            self.history.remove(0);
        }
        let out = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(i, &converted, sample)?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(i, sample)?
        } else {
            self.third_order(i, sample)?
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        Ok(out)
    }
}
