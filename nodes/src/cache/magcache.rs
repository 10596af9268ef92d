//! MagCache (Zehong-Ma/MagCache as diffusers 0.42.1 `hooks/mag_cache.py` runs it,
//! ALGORITHMS.md §2.6) as a [`TransformerHook`]: a per-step magnitude ratio (calibrated once
//! per model and step count) is multiplied up after the retention steps; while the summed
//! error `Σ|1 − Π ratio|` stays within the threshold and at most `max_skip_steps` steps in a
//! row were skipped, the whole stack is skipped and the stored residual of the last computed
//! call (image stream) is added to the embedded input. The arithmetic is f32, as diffusers'
//! tensor ratios make it. In calibration mode every call computes and records
//! `mean_tokens(‖r_t‖ / (‖r_{t−1}‖ + 1e-8))` as its diff, the ratios to paste into
//! `mag_ratios`. State per CFG branch, dropped at the start of every run.

use super::config::{CacheConfigError, MagCacheParams, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use crate::models::blocks::{run_order, BlockTransformer, Conditioning, Streams};
use candle_core::{DType, Result, Tensor, D};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// diffusers' `nearest_interp`: `ratios[round_half_even(i·(L−1)/(N−1))]` for `N` steps (the
/// last ratio for one step), indices computed in f32 as torch does.
pub fn resample(ratios: &[f64], steps: usize) -> Vec<f64> {
    let n = ratios.len();
    if n == 0 || steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![ratios[n - 1]];
    }
    let scale = (n as f32 - 1.0) / (steps as f32 - 1.0);
    (0..steps)
        .map(|i| {
            let at = (i as f32 * scale).round_ties_even() as usize;
            ratios[at.min(n - 1)]
        })
        .collect()
}

#[derive(Debug)]
struct BranchState {
    ratio: f32,
    steps: usize,
    err: f32,
    previous_residual: Option<Tensor>,
}

impl Default for BranchState {
    fn default() -> Self {
        BranchState {
            ratio: 1.0,
            steps: 0,
            err: 0.0,
            previous_residual: None,
        }
    }
}

/// The MagCache hook; one per sampler run.
#[derive(Debug)]
pub struct MagCache {
    threshold: f32,
    params: MagCacheParams,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl MagCache {
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        let params = config.magcache.clone();
        if !(0.0..=1.0).contains(&params.retention_ratio) {
            return Err(super::config::invalid(
                "retention_ratio",
                "a share of the steps, 0 to 1",
            ));
        }
        if params
            .mag_ratios
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.iter().any(|v| !v.is_finite()))
        {
            return Err(super::config::invalid(
                "mag_ratios",
                "a list of finite numbers, one per step (it is resampled to the step count)",
            ));
        }
        Ok(MagCache {
            threshold: config.db.residual_diff_threshold as f32,
            params,
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }
}

/// `mean over tokens of ‖cur‖₂ / (‖prev‖₂ + 1e-8)`, norms over the channels, in f32.
fn magnitude_ratio(cur: &Tensor, prev: &Tensor) -> Result<f64> {
    let norm = |t: &Tensor| {
        t.to_dtype(DType::F32)?
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()
    };
    let ratio = norm(cur)?.broadcast_div(&(norm(prev)? + 1e-8)?)?;
    ratio.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for MagCache {
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
        let steps = info.total_steps;
        let step = info.step_index;
        let branch = self.branches.entry(info.branch).or_default();
        let calibrate = self.params.calibrate;
        let (decision, reason, err) = if calibrate {
            (Decision::Computed, Reason::Calibrating, None)
        } else {
            let ratios = match &self.params.mag_ratios {
                Some(r) => resample(r, steps),
                None => match model.mag_ratios() {
                    Some(r) => resample(r, steps),
                    None => candle_core::bail!(
                        "magcache needs mag_ratios for this model: run once with `calibrate` on \
                         and paste the ratios it records"
                    ),
                },
            };
            let scale = ratios.get(step).map_or(1.0, |&r| r as f32);
            let retention = (self.params.retention_ratio as f32 * steps as f32 + 0.5) as usize;
            if step < retention {
                (Decision::Computed, Reason::Warmup, None)
            } else {
                branch.ratio *= scale;
                branch.steps += 1;
                branch.err += (1.0 - branch.ratio).abs();
                let err = Some(branch.err as f64);
                if branch.previous_residual.is_some()
                    && branch.err <= self.threshold
                    && branch.steps <= self.params.max_skip_steps
                {
                    (Decision::Reused, Reason::DiffBelow, err)
                } else {
                    let reason = if branch.previous_residual.is_none() {
                        Reason::NoReference
                    } else if branch.steps > self.params.max_skip_steps {
                        Reason::MaxContinuous
                    } else {
                        Reason::DiffAbove
                    };
                    *branch = BranchState {
                        previous_residual: branch.previous_residual.take(),
                        ..BranchState::default()
                    };
                    (Decision::Computed, reason, err)
                }
            }
        };
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let h_in = streams.hidden.clone();
        let mut calibration = None;
        let (last, blocks_run) = match decision {
            Decision::Reused => {
                let Some(residual) = &branch.previous_residual else {
                    candle_core::bail!("magcache: no stored residual to reuse");
                };
                (
                    Streams {
                        hidden: (&h_in + residual)?,
                        encoder: streams.encoder.clone(),
                    },
                    0,
                )
            }
            Decision::Computed => {
                let mut s = streams;
                for &at in &order {
                    s = model.block(at, &s, &call)?;
                }
                let residual = (&s.hidden - &h_in)?;
                if calibrate {
                    calibration = Some(match &branch.previous_residual {
                        Some(prev) => magnitude_ratio(&residual, prev)?,
                        None => 1.0,
                    });
                }
                branch.previous_residual = Some(residual);
                (s, order.len())
            }
        };
        let out = model.finish(&last, &call)?;
        model.device().synchronize()?;
        let held: usize = self
            .branches
            .values()
            .filter_map(|b| b.previous_residual.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        self.peak_bytes = self.peak_bytes.max(held);
        let diff = calibration.or(err);
        self.records.push(CallRecord {
            step,
            branch: info.branch,
            decision,
            reason,
            diff,
            threshold: err.map(|_| self.threshold as f64),
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
    fn resampling_takes_the_nearest_ratio_rounding_half_to_even() {
        let r: Vec<f64> = (0..28).map(|i| i as f64).collect();
        assert_eq!(resample(&r, 28), r);
        assert_eq!(resample(&r, 1), vec![27.0]);
        // 12 steps: i·27/11 → 0, 2.45, 4.9, 7.36, …
        assert_eq!(&resample(&r, 12)[..4], &[0.0, 2.0, 5.0, 7.0]);
        // 3 steps: 0, 13.5 → 14 (half to even), 27.
        assert_eq!(resample(&r, 3), vec![0.0, 14.0, 27.0]);
    }
}
