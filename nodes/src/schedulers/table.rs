//! The training noise schedule shared by every scheduler: betas (linear, scaled linear,
//! squared cosine or trained), optionally rescaled to zero terminal SNR, cumulative alphas,
//! rounded step by step as torch computes them in f32; and numpy's linspace / arange / round.

use super::config::{SchedulerConfig, SchedulerConfigError};

/// `alphas_cumprod` of a training beta schedule, rounded to f32 as diffusers keeps it.
#[derive(Debug, Clone)]
pub struct NoiseTable {
    pub alphas_cumprod: Vec<f64>,
}

/// diffusers' `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

/// The training schedule fields every scheduler class has, resolved.
#[derive(Debug, Clone)]
pub struct TrainSchedule {
    pub table: NoiseTable,
    pub beta_schedule: BetaSchedule,
    pub rescale_betas_zero_snr: bool,
}

/// The most training steps a schedule may declare (diffusers' models use 1000).
pub const MAX_TRAIN_STEPS: usize = 1_000_000;

impl TrainSchedule {
    /// `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule`, `trained_betas`,
    /// `rescale_betas_zero_snr`, with diffusers' defaults.
    pub fn from_config(c: &SchedulerConfig) -> Result<Self, SchedulerConfigError> {
        let train_steps = c.usize_or("num_train_timesteps", 1000)?;
        if train_steps < 2 {
            return Err(c.field_error("num_train_timesteps", "at least 2 are needed"));
        }
        // The tables hold a few f64 per training step: a bound keeps a typo (or a hostile
        // file) from asking for gigabytes. Released models use 1000.
        if train_steps > MAX_TRAIN_STEPS {
            return Err(c.field_error(
                "num_train_timesteps",
                format!("at most {MAX_TRAIN_STEPS} are supported"),
            ));
        }
        let beta_start = c.f64_or("beta_start", 1e-4)?;
        let beta_end = c.f64_or("beta_end", 0.02)?;
        let beta_schedule = c.choice_or(
            "beta_schedule",
            BetaSchedule::Linear,
            &[
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
                ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
            ],
        )?;
        let trained = c.f64_list("trained_betas")?;
        let rescale = c.bool_or("rescale_betas_zero_snr", false)?;
        if let Some(betas) = &trained {
            // diffusers keeps using num_train_timesteps for the spacing: they must agree.
            if betas.len() != train_steps {
                return Err(c.field_error(
                    "trained_betas",
                    format!(
                        "{} betas, but num_train_timesteps is {train_steps}",
                        betas.len()
                    ),
                ));
            }
            if betas.iter().any(|b| !(0.0..1.0).contains(b)) {
                return Err(c.field_error("trained_betas", "every beta must be in [0, 1)"));
            }
        }
        let betas = match (&trained, beta_schedule) {
            (Some(b), _) => b.iter().map(|&x| x as f32).collect(),
            (None, BetaSchedule::Linear) => torch_linspace_f32(beta_start, beta_end, train_steps),
            (None, BetaSchedule::ScaledLinear) => {
                torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), train_steps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredCosCapV2) => squaredcos_cap_v2_betas(train_steps),
        };
        let betas = if rescale {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        Ok(TrainSchedule {
            table: NoiseTable::from_betas(&betas),
            beta_schedule,
            rescale_betas_zero_snr: rescale,
        })
    }
}

impl NoiseTable {
    /// diffusers' defaults, which are DiT's: 1000 steps, betas 0.0001 → 0.02.
    pub fn dit_default() -> Self {
        NoiseTable::linear(1000, 1e-4, 0.02)
    }

    /// `torch.linspace(beta_start, beta_end, train_steps, dtype=float32)` betas.
    pub fn linear(train_steps: usize, beta_start: f64, beta_end: f64) -> Self {
        NoiseTable::from_betas(&torch_linspace_f32(
            beta_start,
            beta_end,
            train_steps.max(2),
        ))
    }

    /// From f32 betas as torch computes it: `alphas = 1 - betas` in f32, `cumprod` accumulated
    /// in f64 (torch's CPU accumulator for f32) and rounded to f32 at every element.
    pub fn from_betas(betas: &[f32]) -> Self {
        let mut acc = 1.0f64;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32 as f64
            })
            .collect();
        NoiseTable { alphas_cumprod }
    }

    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `sqrt((1 - ᾱ) / ᾱ)` per training step (the Karras-style sigma), in f32 operations as
    /// torch computes it (near t = 0, where 1 − ᾱ is tiny, every f32 rounding shows).
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt() as f64
            })
            .collect()
    }

    /// DPM-Solver and Euler set the last ᾱ to 2⁻²⁴ after a zero-SNR rescale, so that the
    /// first sigma is finite.
    pub fn with_finite_last_sigma(mut self) -> Self {
        if let Some(last) = self.alphas_cumprod.last_mut() {
            *last = 2f64.powi(-24);
        }
        self
    }
}

/// `torch.linspace(start, end, n, dtype=float32)`: f32 step, each value `start + step·i`
/// (first half) or `end − step·(n−1−i)` rounded once, as torch's CPU kernel does.
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (a, b) = (start as f32, end as f32);
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                (step as f64).mul_add(i as f64, a as f64) as f32
            } else {
                (-(step as f64)).mul_add((n - 1 - i) as f64, b as f64) as f32
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform, `max_beta = 0.999`.
fn squaredcos_cap_v2_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1), in f32 like torch.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let table = NoiseTable::from_betas(betas);
    let mut sqrt_ac: Vec<f32> = table
        .alphas_cumprod
        .iter()
        .map(|&a| (a as f32).sqrt())
        .collect();
    let (Some(&first), Some(&last)) = (sqrt_ac.first(), sqrt_ac.last()) else {
        return betas.to_vec();
    };
    let scale = first / (first - last);
    for s in &mut sqrt_ac {
        *s -= last;
        *s *= scale;
    }
    let alphas_bar: Vec<f32> = sqrt_ac.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(alphas_bar.len());
    out.push(1.0 - alphas_bar[0]);
    for w in alphas_bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// `np.interp(x, arange(len(table)), table)` for x inside the table.
pub fn interp(table: &[f64], x: f64) -> f64 {
    if table.is_empty() {
        return 0.0;
    }
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0];
    }
    if x >= last as f64 {
        return table[last];
    }
    let i = x.floor() as usize;
    let frac = x - i as f64;
    table[i] + (table[i + 1] - table[i]) * frac
}

/// `np.linspace(start, end, n)`: `i·step + start`, the last exactly `end` (numpy's rounding:
/// `start + (end − start)·i/(n − 1)` differs in the last bit and, rounded, by one timestep at
/// some step counts, e.g. 26 DPM-Solver steps).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            v[n - 1] = end;
            v
        }
    }
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop − start)/step)` values, the second
/// `start + step`, the rest `start + i·δ` with `δ = (start + step) − start`, as numpy fills it.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    // NaN (a zero step) and non-positive lengths give an empty range, as numpy.
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let next = start + step;
    let delta = next - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// numpy's `round` (half to even), as diffusers uses for timesteps.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_length_is_numpys() {
        assert_eq!(
            arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        // 1000 / (1000 / 61) rounds above 61: numpy (and so diffusers' "trailing") makes 62.
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
    }
}
