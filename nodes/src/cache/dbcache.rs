//! The step cache as a [`TransformerHook`] (DBCache, ALGORITHMS.md §1.5): the Fn front blocks
//! always run, the policy decides, the middle blocks run or their stored residual (or its
//! TaylorSeer forecast) is added to the fresh front output, and the Bn back blocks always run.
//! State is kept per CFG branch and dropped at the start of every run.

use super::config::{CacheConfigError, StepCacheConfig, Strategy};
use super::indicator::similarity;
use super::noise::ReuseNoise;
use super::policy::{BranchPolicy, Rules};
use super::record::{CallRecord, CfgBranch, Decision};
use super::schedule::{rules_for_run, schedule_preview, Degenerate};
use super::taylorseer::TaylorSeer;
use crate::models::dit::DiT;
use crate::sampling::hook::{CallInfo, TransformerHook};
use candle_core::{Result, Tensor};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Checks `config` against a model with `num_blocks` blocks and a run of `steps` steps.
pub fn check_run(
    config: &StepCacheConfig,
    num_blocks: usize,
    steps: usize,
) -> std::result::Result<(), CacheConfigError> {
    config.check_blocks(num_blocks)?;
    rules_for_run(config, steps).map(|_| ())
}

/// The DBCache hook. One per sampler run; [`TransformerHook::reset`] starts a new run.
#[derive(Debug)]
pub struct StepCache {
    config: Arc<StepCacheConfig>,
    run: Option<RunState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

/// What one run needs, resolved at its first call (model size and step count known).
#[derive(Debug)]
struct RunState {
    rules: Rules,
    front: usize,
    middle: Range<usize>,
    total: usize,
    /// Some step may reuse and there is a middle to skip: keep the middle residual.
    stores: bool,
    /// The indicator runs: keep the front residual of computed calls.
    measures: bool,
    branches: BTreeMap<CfgBranch, BranchState>,
}

/// One CFG branch's counters and buffers (cache-dit's plain or `_cfg` copies).
#[derive(Debug, Default)]
struct BranchState {
    policy: BranchPolicy,
    computed: bool,
    /// Fn residual of the last computed call: the indicator's reference.
    front_residual: Option<Tensor>,
    /// Middle residual of the last computed call (plain reuse).
    middle_residual: Option<Tensor>,
    calibrator: Option<TaylorSeer>,
    noise: Option<ReuseNoise>,
}

fn bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

impl BranchState {
    fn bytes(&self) -> usize {
        self.front_residual.as_ref().map_or(0, bytes)
            + self.middle_residual.as_ref().map_or(0, bytes)
            + self.calibrator.as_ref().map_or(0, TaylorSeer::bytes)
            + self.noise.as_ref().map_or(0, ReuseNoise::bytes)
    }
}

impl RunState {
    fn new(
        config: &StepCacheConfig,
        num_blocks: usize,
        steps: usize,
    ) -> std::result::Result<Self, CacheConfigError> {
        config.check_blocks(num_blocks)?;
        let rules = rules_for_run(config, steps)?;
        let never = schedule_preview(config, steps)?.degenerate == Some(Degenerate::NeverReuses);
        let middle = config.middle_blocks(num_blocks);
        Ok(RunState {
            rules,
            front: middle.start,
            stores: !never && !middle.is_empty(),
            measures: !never && config.strategy == Strategy::Adaptive,
            middle,
            total: num_blocks,
            branches: BTreeMap::new(),
        })
    }
}

impl StepCache {
    pub fn new(config: Arc<StepCacheConfig>) -> Self {
        StepCache {
            config,
            run: None,
            records: Vec::new(),
            peak_bytes: 0,
        }
    }

    pub fn config(&self) -> &StepCacheConfig {
        &self.config
    }

    fn new_branch(&self, branch: CfgBranch) -> BranchState {
        let c = &self.config;
        BranchState {
            calibrator: c
                .taylorseer
                .map(|ts| TaylorSeer::new(ts.order, ts.indexing)),
            noise: (c.noise_scale > 0.0)
                .then(|| ReuseNoise::new(c.noise_scale, c.noise_seed, branch)),
            ..BranchState::default()
        }
    }
}

impl TransformerHook for StepCache {
    fn reset(&mut self) {
        self.run = None;
        self.records.clear();
        self.peak_bytes = 0;
    }

    fn call(
        &mut self,
        model: &DiT,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor> {
        let started = Instant::now();
        if self.run.is_none() {
            let run = RunState::new(&self.config, model.num_blocks(), info.total_steps)
                .map_err(candle_core::Error::msg)?;
            self.run = Some(run);
        }
        let fresh = self.new_branch(info.branch);
        let share_diffs = !self.config.db.cfg_diff_compute_separate;
        let Some(run) = self.run.as_mut() else {
            candle_core::bail!("step cache: run state missing");
        };
        let step = info.step_index;

        let mut state = model.embed(x, timesteps, labels)?;
        let h_in = state.hidden.clone();
        for i in 0..run.front {
            state = state.with_hidden(model.block(i, &state)?);
        }
        let h_front = state.hidden.clone();

        // cfg_diff_compute_separate = false: the unconditional call takes the conditional
        // call's diff of the same step when there is one.
        let shared = match (share_diffs, info.branch) {
            (true, CfgBranch::Uncond) => run
                .branches
                .get(&CfgBranch::Cond)
                .and_then(|b| b.policy.diff_at(step)),
            _ => None,
        };
        let branch = run.branches.entry(info.branch).or_insert(fresh);
        let has_reference = branch.computed && (!run.measures || branch.front_residual.is_some());
        let mut front_residual: Option<Tensor> = None;
        let verdict = {
            let BranchState {
                policy,
                front_residual: reference,
                ..
            } = &mut *branch;
            policy.decide(&run.rules, step, has_reference, |threshold| {
                let Some(prev) = reference.as_ref() else {
                    candle_core::bail!("step cache: no reference residual");
                };
                let cur = (&h_front - &h_in)?;
                let s = similarity(prev, &cur, threshold, shared)?;
                front_residual = Some(cur);
                Ok(s)
            })?
        };

        let mut blocks_run = run.front;
        let hidden = match verdict.decision {
            Decision::Reused => {
                let residual = match &branch.calibrator {
                    Some(c) if run.stores => c.approximate(step)?,
                    _ => branch.middle_residual.clone(),
                };
                match residual {
                    Some(r) => {
                        let r = match branch.noise.as_mut() {
                            Some(noise) => noise.perturb(&r, step)?,
                            None => r,
                        };
                        (&h_front + r)?
                    }
                    // Only when the middle is empty (Fn + Bn ≥ N): nothing to add.
                    None if run.middle.is_empty() => h_front,
                    None => candle_core::bail!("step cache: no stored residual to reuse"),
                }
            }
            Decision::Computed => {
                if run.measures {
                    branch.front_residual = Some(match front_residual.take() {
                        Some(r) => r,
                        None => (&h_front - &h_in)?,
                    });
                }
                for i in run.middle.clone() {
                    state = state.with_hidden(model.block(i, &state)?);
                }
                blocks_run += run.middle.len();
                if run.stores {
                    let residual = (&state.hidden - &h_front)?;
                    match branch.calibrator.as_mut() {
                        Some(c) => c.update(step, residual)?,
                        None => branch.middle_residual = Some(residual),
                    }
                }
                branch.computed = true;
                state.hidden.clone()
            }
        };
        state = state.with_hidden(hidden);
        for i in run.middle.end..run.total {
            state = state.with_hidden(model.block(i, &state)?);
            blocks_run += 1;
        }
        let out = model.finish(&state)?;
        model.device().synchronize()?;

        let held: usize = run.branches.values().map(BranchState::bytes).sum();
        self.peak_bytes = self.peak_bytes.max(held);
        self.records.push(CallRecord {
            step,
            branch: info.branch,
            decision: verdict.decision,
            reason: verdict.reason,
            diff: verdict.diff,
            threshold: verdict.threshold,
            blocks_run,
            blocks_total: run.total,
            ms: started.elapsed().as_secs_f64() * 1e3,
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
