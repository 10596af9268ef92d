//! The step cache as a [`TransformerHook`] (DBCache, ALGORITHMS.md §1.5), for any model on
//! the block contract: the Fn front blocks of the flattened run order always run, the policy
//! decides, the middle blocks run or their stored residual (or its TaylorSeer forecast) is
//! added to the fresh front output, and the Bn back blocks always run. The residual has the
//! streams' shape: the text stream's residual is kept too where a middle block is joint.
//! State is kept per CFG branch and dropped at the start of every run.

use super::config::{CacheConfigError, StepCacheConfig, Strategy};
use super::hook::{CallInfo, TransformerHook};
use super::indicator::similarity;
use super::noise::ReuseNoise;
use super::policy::{BranchPolicy, Rules};
use super::record::{CallRecord, CfgBranch, Decision};
use super::schedule::{preview_rules, rules_for_run, Degenerate};
use super::taylorseer::TaylorSeer;
use crate::models::blocks::{
    run_order, BlockAt, BlockList, BlockTransformer, Conditioning, StreamPattern, Streams,
};
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
    /// Validated once for a model and step count ([`StepCache::for_run`], or the first call).
    plan: Option<RunPlan>,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

/// What a run needs, resolved once from the config, the model's block lists and the step
/// count.
#[derive(Debug)]
struct RunPlan {
    rules: Rules,
    steps: usize,
    /// The block lists the plan was made for.
    lists: Vec<BlockList>,
    /// The flattened run order; `front`, `middle` and the rest index into it.
    order: Vec<BlockAt>,
    front: usize,
    middle: Range<usize>,
    /// Some step may reuse and there is a middle to skip: keep the middle residual.
    stores: bool,
    /// A middle block changes the text stream: keep its residual too.
    stores_encoder: bool,
    /// The indicator runs: keep the front residual of computed calls.
    measures: bool,
}

/// One CFG branch's counters and buffers (cache-dit's plain or `_cfg` copies).
#[derive(Debug, Default)]
struct BranchState {
    policy: BranchPolicy,
    computed: bool,
    /// Fn residual of the last computed call (image stream): the indicator's reference.
    front_residual: Option<Tensor>,
    /// Middle residual of the last computed call (plain reuse), image stream.
    middle_residual: Option<Tensor>,
    /// The same for the text stream, when a middle block is joint.
    encoder_residual: Option<Tensor>,
    calibrator: Option<TaylorSeer>,
    encoder_calibrator: Option<TaylorSeer>,
    noise: Option<ReuseNoise>,
}

fn bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

impl BranchState {
    fn bytes(&self) -> usize {
        self.front_residual.as_ref().map_or(0, bytes)
            + self.middle_residual.as_ref().map_or(0, bytes)
            + self.encoder_residual.as_ref().map_or(0, bytes)
            + self.calibrator.as_ref().map_or(0, TaylorSeer::bytes)
            + self
                .encoder_calibrator
                .as_ref()
                .map_or(0, TaylorSeer::bytes)
            + self.noise.as_ref().map_or(0, ReuseNoise::bytes)
    }
}

impl RunPlan {
    fn new(
        config: &StepCacheConfig,
        lists: &[BlockList],
        steps: usize,
    ) -> std::result::Result<Self, CacheConfigError> {
        let order = run_order(lists);
        config.check_blocks(order.len())?;
        let rules = rules_for_run(config, steps)?;
        let never = preview_rules(&rules, steps).degenerate == Some(Degenerate::NeverReuses);
        let middle = config.middle_blocks(order.len());
        let stores = !never && !middle.is_empty();
        let stores_encoder = stores
            && order[middle.clone()]
                .iter()
                .any(|at| lists[at.list].pattern == StreamPattern::Joint);
        Ok(RunPlan {
            rules,
            steps,
            lists: lists.to_vec(),
            front: middle.start,
            stores,
            stores_encoder,
            measures: !never && config.strategy == Strategy::Adaptive,
            middle,
            order,
        })
    }

    /// Made for these lists and this step count (checked on every call: no allocation).
    fn fits(&self, lists: &[BlockList], steps: usize) -> bool {
        self.steps == steps && self.lists == lists
    }
}

/// `a − b` for the text stream, when both have one.
fn encoder_delta(a: &Streams, b: &Streams) -> Result<Option<Tensor>> {
    match (&a.encoder, &b.encoder) {
        (Some(a), Some(b)) => Ok(Some((a - b)?)),
        _ => Ok(None),
    }
}

impl StepCache {
    /// A cache that resolves its plan at its first call (validation errors surface there).
    pub fn new(config: Arc<StepCacheConfig>) -> Self {
        StepCache {
            config,
            plan: None,
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        }
    }

    /// A cache for runs of `steps` steps on a model with these block lists: the config is
    /// validated and the schedule (the SCM mask included) built here, once.
    pub fn for_run(
        config: Arc<StepCacheConfig>,
        lists: &[BlockList],
        steps: usize,
    ) -> std::result::Result<Self, CacheConfigError> {
        let plan = RunPlan::new(&config, lists, steps)?;
        Ok(StepCache {
            plan: Some(plan),
            ..StepCache::new(config)
        })
    }

    pub fn config(&self) -> &StepCacheConfig {
        &self.config
    }

    /// Drops the per-run state (the plan stays: it depends only on the model and steps).
    pub fn reset(&mut self) {
        self.branches.clear();
        self.records.clear();
        self.peak_bytes = 0;
    }

    /// The records of the calls since the last drain.
    pub fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }

    /// The most bytes of residuals held between calls in this run.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    fn new_branch(config: &StepCacheConfig, plan: &RunPlan, branch: CfgBranch) -> BranchState {
        let calibrator = || {
            config
                .taylorseer
                .map(|ts| TaylorSeer::new(ts.order, ts.indexing))
        };
        BranchState {
            calibrator: calibrator(),
            encoder_calibrator: calibrator().filter(|_| plan.stores_encoder),
            noise: (config.noise_scale > 0.0)
                .then(|| ReuseNoise::new(config.noise_scale, config.noise_seed, branch)),
            ..BranchState::default()
        }
    }
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for StepCache {
    fn reset(&mut self) {
        StepCache::reset(self);
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
        if !self
            .plan
            .as_ref()
            .is_some_and(|p| p.fits(lists, info.total_steps))
        {
            let plan = RunPlan::new(&self.config, lists, info.total_steps)
                .map_err(candle_core::Error::msg)?;
            self.plan = Some(plan);
            self.branches.clear();
        }
        let share_diffs = !self.config.db.cfg_diff_compute_separate;
        let Some(plan) = self.plan.as_ref() else {
            candle_core::bail!("step cache: run plan missing");
        };
        let step = info.step_index;
        let run_blocks = |range: Range<usize>, mut s: Streams, call: &M::Call| -> Result<Streams> {
            for &at in &plan.order[range] {
                s = model.block(at, &s, call)?;
            }
            Ok(s)
        };

        let (streams, call) = model.embed(x, timesteps, cond)?;
        let h_in = streams.hidden.clone();
        let front = run_blocks(0..plan.front, streams, &call)?;
        let h_front = front.hidden.clone();

        // cfg_diff_compute_separate = false: the unconditional call takes the conditional
        // call's diff of the same step when there is one.
        let shared = match (share_diffs, info.branch) {
            (true, CfgBranch::Uncond) => self
                .branches
                .get(&CfgBranch::Cond)
                .and_then(|b| b.policy.diff_at(step)),
            _ => None,
        };
        let branch = self
            .branches
            .entry(info.branch)
            .or_insert_with(|| StepCache::new_branch(&self.config, plan, info.branch));
        let has_reference = branch.computed && (!plan.measures || branch.front_residual.is_some());
        let mut front_residual: Option<Tensor> = None;
        let verdict = {
            let BranchState {
                policy,
                front_residual: reference,
                ..
            } = &mut *branch;
            policy.decide(&plan.rules, step, has_reference, |threshold| {
                let Some(prev) = reference.as_ref() else {
                    candle_core::bail!("step cache: no reference residual");
                };
                let cur = (&h_front - &h_in)?;
                let s = similarity(prev, &cur, threshold, shared)?;
                front_residual = Some(cur);
                Ok(s)
            })?
        };

        let mut blocks_run = plan.front;
        let middle_out = match verdict.decision {
            Decision::Reused => {
                let forecast = |c: &Option<TaylorSeer>, stored: &Option<Tensor>| match c {
                    Some(c) if plan.stores => c.approximate(step),
                    _ => Ok(stored.clone()),
                };
                let residual = forecast(&branch.calibrator, &branch.middle_residual)?;
                let hidden = match residual {
                    Some(r) => {
                        let r = match branch.noise.as_mut() {
                            Some(noise) => noise.perturb(&r, step)?,
                            None => r,
                        };
                        (&h_front + r)?
                    }
                    // Only when the middle is empty (Fn + Bn ≥ N): nothing to add.
                    None if plan.middle.is_empty() => h_front,
                    None => candle_core::bail!("step cache: no stored residual to reuse"),
                };
                // The text stream: e_F + its stored residual, or e_F unchanged.
                let encoder = match (
                    &front.encoder,
                    forecast(&branch.encoder_calibrator, &branch.encoder_residual)?,
                ) {
                    (Some(e), Some(r)) => Some((e + r)?),
                    (e, _) => e.clone(),
                };
                Streams { hidden, encoder }
            }
            Decision::Computed => {
                if plan.measures {
                    branch.front_residual = Some(match front_residual.take() {
                        Some(r) => r,
                        None => (&h_front - &h_in)?,
                    });
                }
                let out = run_blocks(plan.middle.clone(), front.clone(), &call)?;
                blocks_run += plan.middle.len();
                if plan.stores {
                    let residual = (&out.hidden - &h_front)?;
                    match branch.calibrator.as_mut() {
                        Some(c) => c.update(step, residual)?,
                        None => branch.middle_residual = Some(residual),
                    }
                }
                if plan.stores_encoder {
                    if let Some(residual) = encoder_delta(&out, &front)? {
                        match branch.encoder_calibrator.as_mut() {
                            Some(c) => c.update(step, residual)?,
                            None => branch.encoder_residual = Some(residual),
                        }
                    }
                }
                branch.computed = true;
                out
            }
        };
        let back = plan.middle.end..plan.order.len();
        blocks_run += back.len();
        let last = run_blocks(back, middle_out, &call)?;
        let out = model.finish(&last, &call)?;
        model.device().synchronize()?;

        let held: usize = self.branches.values().map(BranchState::bytes).sum();
        self.peak_bytes = self.peak_bytes.max(held);
        self.records.push(CallRecord {
            step,
            branch: info.branch,
            decision: verdict.decision,
            reason: verdict.reason,
            diff: verdict.diff,
            threshold: verdict.threshold,
            blocks_run,
            blocks_total: plan.order.len(),
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: None,
            attention_reused: 0,
            pattern: None,
        });
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        StepCache::drain_records(self)
    }

    fn peak_bytes(&self) -> usize {
        StepCache::peak_bytes(self)
    }
}
