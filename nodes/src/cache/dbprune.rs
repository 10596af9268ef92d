//! cache-dit's DBPrune (Dynamic Block Prune, cache-dit 1.5.3 `prune_context.py`,
//! `PrunedBlocks_Pattern_*`; ALGORITHMS.md §1.11) as a [`TransformerHook`]: every block of the
//! flattened run order outside the first `Fn`, the last `Bn` and `non_prune_block_ids` may be
//! pruned on its own. A prunable block compares its current input (image stream) with its input
//! on the last call of the same branch that computed it (relative L1); below the threshold it
//! is skipped and its stored residual (both streams) is added to its input, else it runs and
//! stores its input and residuals. cache-dit's rules run in its order, per block: warmup, the
//! steps mask, `max_cached_steps` (steps with a pruned block, checked per block),
//! `max_continuous_cached_steps` (not counting a prune earlier in the same step), threshold ≤ 0,
//! nothing stored, then the diff (threshold ≥ 1 prunes without measuring). The dynamic
//! threshold relaxes to `max(thr, 1.25·mean)` of the first five positive diffs of the step on
//! the conditional (or only) branch, as cache-dit reads that list on both branches.

use super::config::{invalid, CacheConfigError, MaskPolicy, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::indicator::rel_l1;
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use super::schedule::rules_mask;
use crate::models::blocks::{run_order, BlockTransformer, Conditioning, Streams};
use candle_core::{Result, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// DBPrune's own settings (cache-dit's `DBPruneConfig` names); the rest (Fn, Bn, threshold,
/// warmup, limits, SCM) are DBCache's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbPruneParams {
    /// Blocks (run-order indices) that are never pruned, besides the first Fn and last Bn.
    pub non_prune_block_ids: Vec<usize>,
    pub enable_dynamic_prune_threshold: bool,
    /// The relaxed threshold must stay below this; `None` = twice the threshold.
    pub max_dynamic_prune_threshold: Option<f64>,
    pub dynamic_prune_threshold_relax_ratio: f64,
}

impl Default for DbPruneParams {
    /// cache-dit's defaults.
    fn default() -> Self {
        DbPruneParams {
            non_prune_block_ids: Vec::new(),
            enable_dynamic_prune_threshold: false,
            max_dynamic_prune_threshold: None,
            dynamic_prune_threshold_relax_ratio: 1.25,
        }
    }
}

impl DbPruneParams {
    pub fn validate(&self) -> std::result::Result<(), CacheConfigError> {
        if !self.dynamic_prune_threshold_relax_ratio.is_finite() {
            return Err(invalid(
                "dynamic_prune_threshold_relax_ratio",
                "must be a number",
            ));
        }
        if self
            .max_dynamic_prune_threshold
            .is_some_and(|m| !m.is_finite() || m <= 0.0)
        {
            return Err(invalid(
                "max_dynamic_prune_threshold",
                "must be above 0 (0 in the node means twice the threshold)",
            ));
        }
        Ok(())
    }
}

/// What a prunable block keeps per branch: its input and residuals on the last call that
/// computed it.
#[derive(Debug, Default)]
struct BlockState {
    input: Option<Tensor>,
    residual: Option<Tensor>,
    encoder_residual: Option<Tensor>,
}

impl BlockState {
    fn bytes(&self) -> usize {
        [&self.input, &self.residual, &self.encoder_residual]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

#[derive(Debug, Default)]
struct BranchState {
    /// Steps with at least one pruned block, in order.
    cached_steps: Vec<usize>,
    continuous: usize,
    /// Every diff measured, per step, in block order.
    diffs: BTreeMap<usize, Vec<f64>>,
    blocks: BTreeMap<usize, BlockState>,
}

/// cache-dit's "non-CFG" branch: the conditional call under separate CFG (it comes first), or
/// the only one.
fn primary(branch: CfgBranch) -> CfgBranch {
    match branch {
        CfgBranch::Uncond => CfgBranch::Cond,
        b => b,
    }
}

/// The DBPrune hook; one per sampler run.
#[derive(Debug)]
pub struct DbPrune {
    config: Arc<StepCacheConfig>,
    /// The steps mask built for the run (SCM), with its policy.
    mask: Option<(Vec<bool>, MaskPolicy)>,
    /// Warmup steps: `range(0, W, I)`, W cut to the mask's leading 1s.
    warmup: usize,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl DbPrune {
    /// A hook for a run of `steps` steps on a model with `blocks` blocks in its run order.
    pub fn for_run(
        config: Arc<StepCacheConfig>,
        blocks: usize,
        steps: usize,
    ) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.dbprune.validate()?;
        config.check_blocks(blocks)?;
        if config.db.fn_compute_blocks == 0 {
            return Err(invalid(
                "Fn_compute_blocks",
                "DBPrune needs at least 1 front block (cache-dit asserts Fn ≥ 1)",
            ));
        }
        if !config.db.cfg_diff_compute_separate {
            return Err(invalid(
                "cfg_diff_compute_separate",
                "DBPrune measures each branch's own diffs (cache-dit 1.5.3 fails when the \
                 unconditional call takes the conditional call's list)",
            ));
        }
        let mask = rules_mask(&config.db, steps)?;
        let leading = mask
            .as_ref()
            .map(|(bits, _)| bits.iter().take_while(|&&b| b).count());
        let warmup = match leading {
            Some(n) => config.db.max_warmup_steps.min(n),
            None => config.db.max_warmup_steps,
        };
        Ok(DbPrune {
            config,
            mask,
            warmup,
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }

    /// The threshold block `i`'s diff is compared with (§5 of the DBPrune notes).
    fn threshold(&self, step: usize) -> f64 {
        let base = self.config.db.residual_diff_threshold;
        let p = &self.config.dbprune;
        if !p.enable_dynamic_prune_threshold {
            return base;
        }
        let list = self
            .branches
            .iter()
            .filter(|(b, _)| **b != CfgBranch::Uncond)
            .find_map(|(_, s)| s.diffs.get(&step));
        let Some(list) = list else {
            return base;
        };
        let positive: Vec<f64> = list.iter().take(5).copied().filter(|&d| d > 0.0).collect();
        if positive.is_empty() {
            return base;
        }
        let mean = positive.iter().sum::<f64>() / positive.len() as f64;
        let relaxed = mean * p.dynamic_prune_threshold_relax_ratio;
        let cap = p.max_dynamic_prune_threshold.unwrap_or(2.0 * base);
        if relaxed < cap {
            relaxed.max(base)
        } else {
            base
        }
    }
}

/// What one prunable block does this call.
enum Verdict {
    Compute(char),
    Prune(char),
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for DbPrune {
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
        let n = order.len();
        let db = self.config.db.clone();
        let fixed: Vec<bool> = (0..n)
            .map(|i| {
                i < db.fn_compute_blocks
                    || i + db.bn_compute_blocks >= n
                    || self.config.dbprune.non_prune_block_ids.contains(&i)
            })
            .collect();
        let step = info.step_index;
        let branch_key = info.branch;
        {
            // cache-dit's mark_step_begin: a streak ends when the previous step pruned nothing.
            let b = self.branches.entry(branch_key).or_default();
            if b.cached_steps.last() != step.checked_sub(1).as_ref() {
                b.continuous = 0;
            }
        }
        let warmup = step < self.warmup && step.is_multiple_of(db.warmup_interval.max(1));
        let mask_bit = self
            .mask
            .as_ref()
            .map(|(bits, policy)| (bits.get(step).copied().unwrap_or(false), *policy));
        let (mut streams, call) = model.embed(x, timesteps, cond)?;
        let mut pattern = String::with_capacity(n);
        let mut pruned = 0;
        let mut first_measured: Option<(f64, f64)> = None;
        let mut static_prune = false;
        for (i, &at) in order.iter().enumerate() {
            if fixed[i] {
                streams = model.block(at, &streams, &call)?;
                pattern.push('F');
                continue;
            }
            let verdict = if warmup {
                Verdict::Compute('W')
            } else if let Some((bit, policy)) =
                mask_bit.filter(|(bit, policy)| *bit || *policy == MaskPolicy::Static)
            {
                match (bit, policy) {
                    (true, _) => Verdict::Compute('S'),
                    _ => Verdict::Prune('s'),
                }
            } else {
                let thr = self.threshold(step);
                let b = self.branches.entry(branch_key).or_default();
                let hits_now = usize::from(b.cached_steps.last() == Some(&step));
                if db.max_cached_steps >= 0 && b.cached_steps.len() as i64 >= db.max_cached_steps {
                    Verdict::Compute('M')
                } else if db.max_continuous_cached_steps >= 0
                    && b.continuous.saturating_sub(hits_now) as i64
                        >= db.max_continuous_cached_steps
                {
                    Verdict::Compute('K')
                } else if thr <= 0.0 {
                    Verdict::Compute('T')
                } else {
                    match b.blocks.get(&i).and_then(|s| s.input.as_ref()) {
                        None => Verdict::Compute('B'),
                        Some(prev) => {
                            let (diff, verdict) = if thr >= 1.0 {
                                (-1.0, Verdict::Prune('P'))
                            } else if prev.dims() != streams.hidden.dims() {
                                (-2.0, Verdict::Compute('C'))
                            } else {
                                let d = rel_l1(prev, &streams.hidden)?;
                                let v = if d < thr {
                                    Verdict::Prune('P')
                                } else {
                                    Verdict::Compute('C')
                                };
                                (d, v)
                            };
                            b.diffs.entry(step).or_default().push(diff);
                            first_measured.get_or_insert((diff, thr));
                            verdict
                        }
                    }
                }
            };
            let b = self.branches.entry(branch_key).or_default();
            match verdict {
                Verdict::Prune(letter) => {
                    let state = b.blocks.get(&i);
                    let residual = state.and_then(|s| s.residual.as_ref());
                    match residual {
                        Some(r) => {
                            if b.cached_steps.last() != Some(&step) {
                                b.cached_steps.push(step);
                                b.continuous += 1;
                            }
                            let hidden = (r + &streams.hidden)?;
                            let encoder = match (
                                &streams.encoder,
                                state.and_then(|s| s.encoder_residual.as_ref()),
                            ) {
                                (Some(e), Some(r)) => Some((r + e)?),
                                (e, _) => e.clone(),
                            };
                            streams = Streams { hidden, encoder };
                            pruned += 1;
                            static_prune |= letter == 's';
                            pattern.push(letter);
                        }
                        // A static mask step before anything was stored: compute.
                        None => {
                            streams = compute_and_store(model, at, i, b, &streams, &call)?;
                            pattern.push('B');
                        }
                    }
                }
                Verdict::Compute(letter) => {
                    streams = compute_and_store(model, at, i, b, &streams, &call)?;
                    pattern.push(letter);
                }
            }
        }
        let out = model.finish(&streams, &call)?;
        model.device().synchronize()?;
        let held: usize = self
            .branches
            .values()
            .flat_map(|b| b.blocks.values())
            .map(BlockState::bytes)
            .sum();
        self.peak_bytes = self.peak_bytes.max(held);
        let (decision, reason) = if pruned > 0 {
            let reason = if static_prune {
                Reason::ScheduleReuse
            } else {
                Reason::DiffBelow
            };
            (Decision::Reused, reason)
        } else if warmup {
            (Decision::Computed, Reason::Warmup)
        } else if pattern.contains('S') {
            (Decision::Computed, Reason::ScheduleCompute)
        } else if pattern.contains('M') {
            (Decision::Computed, Reason::MaxCached)
        } else if pattern.contains('K') {
            (Decision::Computed, Reason::MaxContinuous)
        } else if pattern.contains('T') {
            (Decision::Computed, Reason::ThresholdOff)
        } else if pattern.contains('C') {
            (Decision::Computed, Reason::DiffAbove)
        } else {
            (Decision::Computed, Reason::NoReference)
        };
        self.records.push(CallRecord {
            step,
            branch: info.branch,
            decision,
            reason,
            diff: first_measured.map(|(d, _)| d),
            threshold: first_measured.map(|(_, t)| t),
            blocks_run: n - pruned,
            blocks_total: n,
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: None,
            attention_reused: 0,
            pattern: Some(pattern),
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

/// Runs block `i` and stores its input and residuals for the branch.
fn compute_and_store<M: BlockTransformer + ?Sized>(
    model: &M,
    at: crate::models::blocks::BlockAt,
    i: usize,
    branch: &mut BranchState,
    streams: &Streams,
    call: &M::Call,
) -> Result<Streams> {
    let out = model.block(at, streams, call)?;
    let state = branch.blocks.entry(i).or_default();
    state.residual = Some((&out.hidden - &streams.hidden)?);
    state.encoder_residual = match (&out.encoder, &streams.encoder) {
        (Some(a), Some(b)) => Some((a - b)?),
        _ => None,
    };
    state.input = Some(streams.hidden.clone());
    Ok(out)
}

/// Which branch's diffs the dynamic threshold reads (exposed for the notes' quirk test).
pub fn threshold_source(branch: CfgBranch) -> CfgBranch {
    primary(branch)
}
