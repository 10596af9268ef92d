//! The training noise schedule shared by every scheduler: linear betas, cumulative alphas.

/// `alphas_cumprod` of a linear beta schedule (diffusers `beta_schedule="linear"`).
#[derive(Debug, Clone)]
pub struct NoiseTable {
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseTable {
    /// diffusers' defaults, which are DiT's: 1000 steps, betas 0.0001 → 0.02.
    pub fn dit_default() -> Self {
        NoiseTable::linear(1000, 1e-4, 0.02)
    }

    pub fn linear(train_steps: usize, beta_start: f64, beta_end: f64) -> Self {
        let n = train_steps.max(2);
        let mut acc = 1.0f64;
        let alphas_cumprod = (0..n)
            .map(|i| {
                let beta = beta_start + (beta_end - beta_start) * i as f64 / (n - 1) as f64;
                acc *= 1.0 - beta;
                // diffusers keeps this table in f32; round the same way.
                acc as f32 as f64
            })
            .collect();
        NoiseTable { alphas_cumprod }
    }

    pub fn train_steps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `sqrt((1 - ᾱ) / ᾱ)` per training step (the Karras-style sigma), rounded to f32.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt() as f32 as f64)
            .collect()
    }
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

/// `np.linspace(start, end, n)`.
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => (0..n)
            .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
            .collect(),
    }
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
