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
use crate::models::blocks::{run_order, BlockTransformer, Conditioning, Streams};
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

/// The TeaCache hook; one per sampler run.
#[derive(Debug)]
pub struct TeaCache {
    threshold: f64,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl TeaCache {
    /// A hook with the config's threshold (`rel_l1_thresh`); the rescale polynomial is the
    /// model's ([`BlockTransformer::rescale_coefficients`]), identity without one.
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        Ok(TeaCache {
            threshold: config.db.residual_diff_threshold,
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
        let Some(modulated) = model.modulated_input(&streams, &call)? else {
            candle_core::bail!(
                "teacache needs the model's modulated input, which it does not expose"
            );
        };
        let branch = self.branches.entry(info.branch).or_default();
        let step = info.step_index;
        let forced = step == 0 || step + 1 == info.total_steps;
        let (decision, reason, measured) = match (&branch.previous_modulated, forced) {
            (Some(prev), false) => {
                let coefficients = model.rescale_coefficients().unwrap_or(&IDENTITY);
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
                let mut s = streams;
                for &at in &order {
                    s = model.block(at, &s, &call)?;
                }
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
    fn rescale_is_numpys_poly1d() {
        // poly1d([2, -3, 1])(4) = 2·16 − 12 + 1 = 21.
        assert_eq!(rescale(&[2.0, -3.0, 1.0], 4.0), 21.0);
        assert_eq!(rescale(&IDENTITY, 0.37), 0.37);
    }
}
