//! TeaCache (ali-vilab/TeaCache, ALGORITHMS.md §3) as a [`TransformerHook`]: the relative L1
//! change of the timestep-modulated input of block 0 (the contract's
//! [`BlockTransformer::modulated_input`]) since the previous call, rescaled by the model
//! family's polynomial, is accumulated; while the sum stays below the threshold every block
//! is skipped and the stored residual of the whole stack (image stream) is added to the
//! embedded input; otherwise all blocks run and the sum restarts. The first and the last call
//! of a run always compute. The previous modulated input is replaced on every call (hit or
//! miss), unlike FBCache's anchor. State per CFG branch, dropped at the start of every run.

use super::config::{CacheConfigError, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::indicator::rel_l1;
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use crate::models::blocks::{run_all, run_order, BlockTransformer, Conditioning, Streams};
use candle_core::{Result, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// No rescaling (`[1, 0]`, xDiT's default for models without fitted coefficients).
pub const IDENTITY: [f64; 2] = [1.0, 0.0];

/// `numpy.poly1d(coefficients)(x)`: Horner's rule, highest power first.
pub fn rescale(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |acc, &c| acc * x + c)
}

#[derive(Debug, Default)]
struct BranchState {
    previous_modulated: Option<Tensor>,
    previous_residual: Option<Tensor>,
    accumulated: f64,
}

/// `numpy.polyfit(xs, ys, degree)`: the least-squares polynomial, highest power first (by
/// Householder QR on the column-scaled Vandermonde matrix, as numpy's `lstsq` on its scaled
/// one). `None` with fewer points than coefficients or non-finite data.
pub fn fit_polynomial(xs: &[f64], ys: &[f64], degree: usize) -> Option<Vec<f64>> {
    let n = xs.len();
    let m = degree + 1;
    if n != ys.len() || n < m || xs.iter().chain(ys).any(|v| !v.is_finite()) {
        return None;
    }
    // Columns x^degree … x^0, each scaled to unit norm.
    let mut a: Vec<Vec<f64>> = (0..m)
        .map(|j| xs.iter().map(|&x| x.powi((degree - j) as i32)).collect())
        .collect();
    let scale: Vec<f64> = a
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    for (c, &s) in a.iter_mut().zip(&scale) {
        if s > 0.0 {
            c.iter_mut().for_each(|v| *v /= s);
        }
    }
    let mut b = ys.to_vec();
    // Householder QR, column by column, applied to b as it goes.
    for k in 0..m {
        let norm = a[k][k..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return None;
        }
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = a[k][k..].to_vec();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        if vv == 0.0 {
            continue;
        }
        for col in a.iter_mut().skip(k).chain(std::iter::once(&mut b)) {
            let dot: f64 = v.iter().zip(&col[k..]).map(|(p, q)| p * q).sum();
            let f = 2.0 * dot / vv;
            for (x, vi) in col[k..].iter_mut().zip(&v) {
                *x -= f * vi;
            }
        }
    }
    // Back substitution on R (upper m × m), then undo the scaling.
    let mut coef = vec![0.0; m];
    for i in (0..m).rev() {
        let mut sum = b[i];
        for j in i + 1..m {
            sum -= a[j][i] * coef[j];
        }
        coef[i] = sum / a[i][i];
    }
    Some(
        coef.iter()
            .zip(&scale)
            .map(|(c, s)| if *s > 0.0 { c / s } else { 0.0 })
            .collect(),
    )
}

/// One uncached run's TeaCache calibration data: per call after a branch's first, the
/// relative L1 change of block 0's modulated input (x) and of the model's output (y) since
/// that branch's previous call — the pairs the rescale polynomial is fitted to (y ≈ P(x)).
#[derive(Debug, Default)]
pub struct Calibration {
    previous: BTreeMap<CfgBranch, (Tensor, Tensor)>,
    pub pairs: Vec<(f64, f64)>,
    records: Vec<CallRecord>,
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for Calibration {
    fn reset(&mut self) {
        self.previous.clear();
        self.records.clear();
    }

    fn call(
        &mut self,
        model: &M,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let started = Instant::now();
        let order = run_order(model.block_lists());
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let modulated = modulated_input(model, &streams, &call)?;
        let out = model.finish(&run_all(model, streams, &call)?, &call)?;
        let mut diff = None;
        if let Some((prev_m, prev_out)) = self.previous.get(&info.branch) {
            let pair = (rel_l1(prev_m, &modulated)?, rel_l1(prev_out, &out)?);
            diff = Some(pair.0);
            self.pairs.push(pair);
        }
        self.previous.insert(info.branch, (modulated, out.clone()));
        model.device().synchronize()?;
        let mut record = CallRecord::uncached(
            info.step_index,
            info.branch,
            order.len(),
            started.elapsed().as_secs_f64() * 1e3,
        );
        record.reason = Reason::Calibrating;
        record.diff = diff;
        self.records.push(record);
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }
}

/// The model's timestep-modulated input to its first block: TeaCache's indicator input.
fn modulated_input<M: BlockTransformer + ?Sized>(
    model: &M,
    streams: &Streams,
    call: &M::Call,
) -> Result<Tensor> {
    match model.modulated_input(streams, call)? {
        Some(m) => Ok(m),
        None => candle_core::bail!(
            "teacache needs the model's modulated input, which it does not expose"
        ),
    }
}

/// The TeaCache hook; one per sampler run.
#[derive(Debug)]
pub struct TeaCache {
    threshold: f64,
    /// The rescale polynomial given in the config; `None` = the model family's.
    coefficients: Option<Vec<f64>>,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl TeaCache {
    /// A hook with the config's threshold (`rel_l1_thresh`); the rescale polynomial is the
    /// model's ([`BlockTransformer::rescale_coefficients`]), identity without one.
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        if config
            .teacache_coefficients
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.iter().any(|v| !v.is_finite()))
        {
            return Err(super::config::invalid(
                "coefficients",
                "the rescale polynomial's coefficients, highest power first (finite numbers)",
            ));
        }
        Ok(TeaCache {
            threshold: config.db.residual_diff_threshold,
            coefficients: config.teacache_coefficients.clone(),
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }
}

fn bytes(t: &Option<Tensor>) -> usize {
    t.as_ref()
        .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for TeaCache {
    fn reset(&mut self) {
        self.branches.clear();
        self.records.clear();
        self.peak_bytes = 0;
    }

    fn call(
        &mut self,
        model: &M,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let started = Instant::now();
        let order = run_order(model.block_lists());
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let modulated = modulated_input(model, &streams, &call)?;
        let branch = self.branches.entry(info.branch).or_default();
        let step = info.step_index;
        let forced = step == 0 || step + 1 == info.total_steps;
        let (decision, reason, measured) = match (&branch.previous_modulated, forced) {
            (Some(prev), false) => {
                let coefficients = match &self.coefficients {
                    Some(c) => c.as_slice(),
                    None => model.rescale_coefficients().unwrap_or(&IDENTITY),
                };
                branch.accumulated += rescale(coefficients, rel_l1(prev, &modulated)?);
                if branch.accumulated < self.threshold && branch.previous_residual.is_some() {
                    (
                        Decision::Reused,
                        Reason::DiffBelow,
                        Some(branch.accumulated),
                    )
                } else {
                    let sum = branch.accumulated;
                    branch.accumulated = 0.0;
                    (Decision::Computed, Reason::DiffAbove, Some(sum))
                }
            }
            (None, false) => (Decision::Computed, Reason::NoReference, None),
            (_, true) => {
                branch.accumulated = 0.0;
                let reason = if step == 0 {
                    Reason::NoReference
                } else {
                    Reason::LastStep
                };
                (Decision::Computed, reason, None)
            }
        };
        branch.previous_modulated = Some(modulated);
        let h_in = streams.hidden.clone();
        let (last, blocks_run) = match decision {
            Decision::Reused => {
                let Some(residual) = &branch.previous_residual else {
                    candle_core::bail!("teacache: no stored residual to reuse");
                };
                let hidden = (&h_in + residual)?;
                (
                    Streams {
                        hidden,
                        encoder: streams.encoder.clone(),
                    },
                    0,
                )
            }
            Decision::Computed => {
                let s = run_all(model, streams, &call)?;
                branch.previous_residual = Some((&s.hidden - &h_in)?);
                (s, order.len())
            }
        };
        let out = model.finish(&last, &call)?;
        model.device().synchronize()?;
        let held: usize = self
            .branches
            .values()
            .map(|b| bytes(&b.previous_modulated) + bytes(&b.previous_residual))
            .sum();
        self.peak_bytes = self.peak_bytes.max(held);
        self.records.push(CallRecord {
            step,
            branch: info.branch,
            decision,
            reason,
            // The accumulated, rescaled distance: what the threshold is compared with.
            diff: measured,
            threshold: measured.map(|_| self.threshold),
            blocks_run,
            blocks_total: order.len(),
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: None,
            attention_reused: 0,
            pattern: None,
        });
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }

    fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quartic_is_recovered_exactly_and_noisy_data_fit_as_numpy_polyfit() {
        let truth = [
            4.98651651e+02,
            -2.83781631e+02,
            5.58554382e+01,
            -3.82021401,
            0.264230861,
        ];
        let xs: Vec<f64> = (0..40).map(|i| 0.01 + i as f64 * 0.012).collect();
        let ys: Vec<f64> = xs.iter().map(|&x| rescale(&truth, x)).collect();
        let fit = fit_polynomial(&xs, &ys, 4).expect("fit");
        for (a, b) in fit.iter().zip(&truth) {
            assert!((a - b).abs() <= 1e-7 * b.abs().max(1.0), "{fit:?}");
        }
        // numpy 2.4.6: np.polyfit([0, 1, 2, 3, 4], [1, 3, 2, 5, 4], 1) = [0.8, 1.4].
        let line = fit_polynomial(&[0., 1., 2., 3., 4.], &[1., 3., 2., 5., 4.], 1).expect("line");
        assert!(
            (line[0] - 0.8).abs() < 1e-12 && (line[1] - 1.4).abs() < 1e-12,
            "{line:?}"
        );
        assert_eq!(
            fit_polynomial(&[1.0, 2.0], &[1.0, 2.0], 4),
            None,
            "too few points"
        );
    }

    #[test]
    fn rescale_is_numpys_poly1d() {
        // poly1d([2, -3, 1])(4) = 2·16 − 12 + 1 = 21.
        assert_eq!(rescale(&[2.0, -3.0, 1.0], 4.0), 21.0);
        assert_eq!(rescale(&IDENTITY, 0.37), 0.37);
    }
}
