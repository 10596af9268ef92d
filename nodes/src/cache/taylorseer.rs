//! The TaylorSeer calibrator (ALGORITHMS.md §1.9): on a reuse, forecast the middle residual
//! from finite differences of the computed steps instead of reusing it stale.
//!
//! **Indexing.** cache-dit creates a stream lazily inside its first `update`, after that call's
//! `mark_step_begin` has passed, so the stream's `current_step` is the branch step − 1; and it
//! only takes a derivative when `current_step > 1`. Net effect (pipeline mode, where contexts
//! are rebuilt for every inference): updates at branch steps 0, 1 and 2 store no derivative.
//! * [`TaylorIndexing::CacheDit`] (the default) follows this, so forecasts match cache-dit's
//!   for every warmup/interval setting (with the default W = 8, I = 1 it is invisible; with
//!   I > 1 it decides whether a hit at step 3 or 5 extrapolates).
//! * [`TaylorIndexing::Intended`] takes a derivative at every update that has a previous one,
//!   which is what cache-dit's own comments in `update` describe.
//!
//! Not followed anywhere: the stream's step counter. We index by the real step of the branch
//! and keep `last update step` explicitly, so intervals `w = u − p` and horizons `e = s − u` are
//! the same as cache-dit's without replaying its per-call counter (which, in cache-dit's
//! transformer-only mode, shifts by one between the first and later inferences). State is reset
//! at every run start, so every run behaves like cache-dit's pipeline mode.
//!
//! Followed everywhere: the divided difference uses only the latest interval at every order;
//! the forecast is `Σ dY[k]·e^k/k!`; a shape change restarts the stream; arithmetic runs in the
//! tensor's dtype, as cache-dit does.

use super::config::TaylorIndexing;
use candle_core::{Result, Tensor};

/// One forecast stream (cache-dit's `TaylorSeerState`) for one branch.
#[derive(Debug, Clone)]
pub struct TaylorSeer {
    order: usize,
    indexing: TaylorIndexing,
    last_update: Option<usize>,
    /// `dY_cur`: the value and its derivatives from the latest update.
    current: Vec<Tensor>,
}

impl TaylorSeer {
    /// `order` = number of derivatives (cache-dit's `taylorseer_order`).
    pub fn new(order: usize, indexing: TaylorIndexing) -> Self {
        TaylorSeer {
            order,
            indexing,
            last_update: None,
            current: Vec::new(),
        }
    }

    fn derivatives_allowed(&self, step: usize) -> bool {
        match self.indexing {
            // cache-dit: stream step (= step − 1) > 1.
            TaylorIndexing::CacheDit => step >= 3,
            TaylorIndexing::Intended => true,
        }
    }

    /// A computed step: `y` is the fresh middle residual at branch step `step`.
    pub fn update(&mut self, step: usize, y: Tensor) -> Result<()> {
        let mut previous = std::mem::take(&mut self.current);
        if previous.first().is_some_and(|p| p.shape() != y.shape()) {
            previous.clear();
            self.last_update = None;
        }
        let mut current = Vec::with_capacity(self.order + 1);
        current.push(y);
        if let Some(last) = self.last_update.filter(|_| self.derivatives_allowed(step)) {
            let window = step.saturating_sub(last).max(1) as f64;
            for k in 0..self.order {
                let (Some(prev), Some(cur)) = (previous.get(k), current.get(k)) else {
                    break;
                };
                let d = ((cur - prev)? / window)?;
                current.push(d);
            }
        }
        self.current = current;
        self.last_update = Some(step);
        Ok(())
    }

    /// The forecast at branch step `step`: `Σ_k dY[k]·e^k/k!` with `e = step − last update`;
    /// `None` before the first update.
    pub fn approximate(&self, step: usize) -> Result<Option<Tensor>> {
        let (Some(last), Some(value)) = (self.last_update, self.current.first()) else {
            return Ok(None);
        };
        let e = step.saturating_sub(last) as f64;
        let mut out = value.clone();
        let mut coef = 1.0;
        for (k, d) in self.current.iter().enumerate().skip(1) {
            coef *= e / k as f64;
            out = (out + d.affine(coef, 0.0)?)?;
        }
        Ok(Some(out))
    }

    /// Derivatives held now (0 = plain reuse).
    pub fn derivatives(&self) -> usize {
        self.current.len().saturating_sub(1)
    }

    /// Bytes held by the stream's tensors.
    pub fn bytes(&self) -> usize {
        self.current
            .iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn scalar(v: f64) -> Tensor {
        Tensor::new(&[v], &Device::Cpu).expect("tensor")
    }

    fn value(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64)
            .and_then(|t| t.to_vec1::<f64>())
            .expect("value")[0]
    }

    fn seer(
        order: usize,
        indexing: TaylorIndexing,
        f: impl Fn(f64) -> f64,
        at: &[usize],
    ) -> TaylorSeer {
        let mut s = TaylorSeer::new(order, indexing);
        for &u in at {
            s.update(u, scalar(f(u as f64))).expect("update");
        }
        s
    }

    fn forecast(s: &TaylorSeer, step: usize) -> f64 {
        value(&s.approximate(step).expect("ok").expect("some"))
    }

    #[test]
    fn order_one_extrapolates_a_line_exactly() {
        let s = seer(
            1,
            TaylorIndexing::CacheDit,
            |x| 3.0 * x + 1.0,
            &[0, 1, 2, 3, 4],
        );
        assert_eq!(s.derivatives(), 1);
        for step in 5..9 {
            assert!((forecast(&s, step) - (3.0 * step as f64 + 1.0)).abs() < 1e-9);
        }
        // Uneven spacing: the latest interval only (Y7 − Y4)/3.
        let s = seer(1, TaylorIndexing::CacheDit, |x| x * x, &[0, 1, 2, 3, 4, 7]);
        assert!((forecast(&s, 9) - (49.0 + 2.0 * (49.0 - 16.0) / 3.0)).abs() < 1e-9);
    }

    #[test]
    fn orders_two_to_four_use_backward_differences() {
        // Y = x^2, updates every step to 6; order 2 at e: Y6 + e·∇Y + e²/2·∇²Y.
        let s = seer(
            2,
            TaylorIndexing::CacheDit,
            |x| x * x,
            &[0, 1, 2, 3, 4, 5, 6],
        );
        assert_eq!(s.derivatives(), 2);
        // ∇Y = 36 − 25 = 11, ∇²Y = 11 − 9 = 2; e = 2 → 36 + 22 + 4 = 62.
        assert!((forecast(&s, 8) - 62.0).abs() < 1e-9);
        // Y = x^3, order 3: ∇Y = 216−125 = 91, ∇²Y = 91−61 = 30, ∇³Y = 30−24 = 6;
        // e = 1 → 216 + 91 + 15 + 1 = 323.
        let s = seer(
            3,
            TaylorIndexing::CacheDit,
            |x| x.powi(3),
            &[0, 1, 2, 3, 4, 5, 6],
        );
        assert_eq!(s.derivatives(), 3);
        assert!((forecast(&s, 7) - 323.0).abs() < 1e-9);
        // Y = x^4, order 4, updates 0..7.
        let s = seer(
            4,
            TaylorIndexing::CacheDit,
            |x| x.powi(4),
            &[0, 1, 2, 3, 4, 5, 6, 7],
        );
        assert_eq!(s.derivatives(), 4);
        assert!(
            (forecast(&s, 7) - 2401.0).abs() < 1e-9,
            "e = 0 returns the value"
        );
        // ∇ at 7: 2401−1296 = 1105, ∇² = 1105−671 = 434, ∇³ = 434−302 = 132, ∇⁴ = 132−108 = 24.
        let expected = 2401.0 + 1105.0 + 434.0 / 2.0 + 132.0 / 6.0 + 24.0 / 24.0;
        assert!((forecast(&s, 8) - expected).abs() < 1e-9);
    }

    #[test]
    fn cache_dit_indexing_quirk_delays_derivatives_to_step_three() {
        let f = |x: f64| 10.0 * x;
        // Forced computes at 0, 2, 4 (W = 8, I = 2).
        let at_2 = seer(1, TaylorIndexing::CacheDit, f, &[0, 2]);
        assert_eq!(at_2.derivatives(), 0);
        assert_eq!(forecast(&at_2, 3), 20.0, "a hit at 3 is plain reuse of Y2");
        let at_4 = seer(1, TaylorIndexing::CacheDit, f, &[0, 2, 4]);
        assert_eq!(
            forecast(&at_4, 5),
            40.0 + (40.0 - 20.0) / 2.0,
            "Y4 + (Y4 − Y2)/2"
        );
        // Table of §1.9: updates at 0..3 give [Y0], [Y1], [Y2], [Y3, Y3 − Y2].
        let at_1 = seer(1, TaylorIndexing::CacheDit, f, &[0, 1]);
        assert_eq!(at_1.derivatives(), 0);
        let at_3 = seer(1, TaylorIndexing::CacheDit, f, &[0, 1, 2, 3]);
        assert_eq!(at_3.derivatives(), 1);
        // Higher orders build one level per later update.
        let o4 = seer(4, TaylorIndexing::CacheDit, f, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(o4.derivatives(), 3);
        // Intended indexing: a derivative as soon as there is a previous update.
        let intended = seer(1, TaylorIndexing::Intended, f, &[0, 2]);
        assert_eq!(intended.derivatives(), 1);
        assert_eq!(forecast(&intended, 3), 30.0);
        let o4 = seer(4, TaylorIndexing::Intended, f, &[0, 1, 2, 3, 4]);
        assert_eq!(o4.derivatives(), 4);
    }

    #[test]
    fn empty_stream_has_no_forecast_and_shape_change_restarts() {
        let mut s = TaylorSeer::new(1, TaylorIndexing::Intended);
        assert!(s.approximate(3).expect("ok").is_none());
        s.update(0, scalar(1.0)).expect("update");
        s.update(1, scalar(2.0)).expect("update");
        assert_eq!(s.derivatives(), 1);
        let wide = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).expect("tensor");
        s.update(2, wide).expect("update");
        assert_eq!(s.derivatives(), 0, "restarted on a shape change");
        assert_eq!(s.bytes(), 16);
    }
}
