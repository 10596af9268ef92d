//! What a training loop reports after each step, and a running mean for a readable loss.

/// Progress of a training run after one optimisation step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainProgress {
    /// Steps done so far (1-based after the first step).
    pub step: u64,
    pub total_steps: u64,
    /// This step's loss.
    pub loss: f64,
    /// Mean loss over the recent window.
    pub loss_avg: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Training images per second over the recent window.
    pub images_per_sec: f64,
    /// Wall time spent training so far (all sessions of a resumed run), in seconds.
    pub elapsed_secs: f64,
    /// Estimated seconds left at the recent speed.
    pub eta_secs: f64,
}

/// Whether the caller wants training to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainFlow {
    Continue,
    Stop,
}

/// Mean of the last `window` values.
#[derive(Debug, Clone)]
pub struct RunningMean {
    window: usize,
    values: std::collections::VecDeque<f64>,
}

impl RunningMean {
    pub fn new(window: usize) -> Self {
        RunningMean {
            window: window.max(1),
            values: Default::default(),
        }
    }

    pub fn push(&mut self, v: f64) -> f64 {
        if self.values.len() == self.window {
            self.values.pop_front();
        }
        self.values.push_back(v);
        self.mean()
    }

    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }
}

/// Linear warm-up to `peak`, then constant. A constant rate (with the EMA doing the averaging,
/// as in the DiT paper) makes a run of N steps an exact prefix of any longer run, so a model
/// picked at step N is reproduced by training with `--steps N`.
pub fn warmup_constant_lr(step: u64, warmup: u64, peak: f64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedule_shape() {
        assert!((warmup_constant_lr(0, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((warmup_constant_lr(4, 10, 1.0) - 0.5).abs() < 1e-12);
        assert!((warmup_constant_lr(9, 10, 1.0) - 1.0).abs() < 1e-12);
        assert_eq!(warmup_constant_lr(5000, 10, 1.0), 1.0);
    }

    #[test]
    fn running_mean_window() {
        let mut m = RunningMean::new(2);
        m.push(1.0);
        m.push(3.0);
        assert_eq!(m.push(5.0), 4.0);
    }
}
