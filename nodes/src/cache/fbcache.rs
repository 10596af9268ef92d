//! diffusers' First Block Cache (`hooks/first_block_cache.py`, ALGORITHMS.md §2.2) as a
//! [`TransformerHook`] for any model on the block contract: the first block of the run order
//! always runs; its residual is compared with the one of the last computed call; the rest
//! runs when `diff > threshold` (an equal diff reuses, the opposite tie-break from cache-dit),
//! else the stored residual of the rest (both streams) is added to the fresh first-block
//! output. No warmup, no step limits, no calibrator; state per CFG branch (diffusers keeps one
//! per `cache_context`), dropped at the start of every run.

use super::config::{CacheConfigError, DbCacheConfig, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::indicator::rel_l1;
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use crate::models::blocks::{run_order, BlockAt, BlockList, BlockTransformer, Conditioning};
use candle_core::{Result, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The DBCache rules that preview an FBCache run: F1B0, measured on every call after the
/// first, no warmup and no limits (the timeline's plan; the hook decides itself).
pub fn as_db_rules(threshold: f64) -> DbCacheConfig {
    DbCacheConfig {
        fn_compute_blocks: 1,
        bn_compute_blocks: 0,
        residual_diff_threshold: threshold,
        max_warmup_steps: 0,
        warmup_interval: 1,
        max_cached_steps: -1,
        max_continuous_cached_steps: -1,
        max_accumulated_residual_diff_threshold: None,
        ..DbCacheConfig::default()
    }
}

/// One branch's reference and stored residuals.
#[derive(Debug, Default)]
struct BranchState {
    /// The first block's residual (image stream) of the last computed call.
    head_residual: Option<Tensor>,
    /// The rest's residual: last output − first-block output, image stream.
    tail_hidden: Option<Tensor>,
    /// The same for the text stream, when the model has one.
    tail_encoder: Option<Tensor>,
}

fn bytes(t: &Option<Tensor>) -> usize {
    t.as_ref()
        .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
}

impl BranchState {
    fn bytes(&self) -> usize {
        bytes(&self.head_residual) + bytes(&self.tail_hidden) + bytes(&self.tail_encoder)
    }
}

/// The First Block Cache hook; one per sampler run.
#[derive(Debug)]
pub struct FirstBlockCache {
    threshold: f64,
    /// The run order it was checked against.
    order: Option<(Vec<BlockList>, Vec<BlockAt>)>,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl FirstBlockCache {
    /// A hook for a model with these block lists (at least two blocks).
    pub fn for_run(
        config: Arc<StepCacheConfig>,
        lists: &[BlockList],
    ) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.check_blocks(run_order(lists).len())?;
        Ok(FirstBlockCache {
            threshold: config.db.residual_diff_threshold,
            order: Some((lists.to_vec(), run_order(lists))),
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for FirstBlockCache {
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
        let lists = model.block_lists();
        if !self.order.as_ref().is_some_and(|(l, _)| l == lists) {
            let order = run_order(lists);
            if order.len() < 2 {
                candle_core::bail!(
                    "fbcache needs at least 2 blocks; the model has {}",
                    order.len()
                );
            }
            self.order = Some((lists.to_vec(), order));
            self.branches.clear();
        }
        let Some((_, order)) = self.order.as_ref() else {
            candle_core::bail!("fbcache: run order missing");
        };
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let h_in = streams.hidden.clone();
        let head = model.block(order[0], &streams, &call)?;
        let residual = (&head.hidden - &h_in)?;
        let branch = self.branches.entry(info.branch).or_default();

        let (decision, reason, diff) = match &branch.head_residual {
            None => (Decision::Computed, Reason::NoReference, None),
            Some(prev) => {
                // diffusers: mean|r − prev| / mean|prev| in the tensors' dtype, then `> thr`.
                let diff = rel_l1(prev, &residual)?;
                if diff > self.threshold {
                    (Decision::Computed, Reason::DiffAbove, Some(diff))
                } else {
                    (Decision::Reused, Reason::DiffBelow, Some(diff))
                }
            }
        };
        let (last, blocks_run) = match decision {
            Decision::Reused => {
                let Some(tail) = &branch.tail_hidden else {
                    candle_core::bail!("fbcache: no stored residual to reuse");
                };
                let hidden = (&head.hidden + tail)?;
                let encoder = match (&head.encoder, &branch.tail_encoder) {
                    (Some(e), Some(r)) => Some((e + r)?),
                    (e, _) => e.clone(),
                };
                (crate::models::blocks::Streams { hidden, encoder }, 1)
            }
            Decision::Computed => {
                branch.head_residual = Some(residual);
                let mut s = head.clone();
                for &at in &order[1..] {
                    s = model.block(at, &s, &call)?;
                }
                branch.tail_hidden = Some((&s.hidden - &head.hidden)?);
                branch.tail_encoder = match (&s.encoder, &head.encoder) {
                    (Some(a), Some(b)) => Some((a - b)?),
                    _ => None,
                };
                (s, order.len())
            }
        };
        let out = model.finish(&last, &call)?;
        model.device().synchronize()?;
        let held: usize = self.branches.values().map(BranchState::bytes).sum();
        self.peak_bytes = self.peak_bytes.max(held);
        self.records.push(CallRecord {
            step: info.step_index,
            branch: info.branch,
            decision,
            reason,
            diff,
            threshold: diff.map(|_| self.threshold),
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
