//! Pyramid Attention Broadcast (diffusers 0.42.1 `hooks/pyramid_attention_broadcast.py`,
//! ALGORITHMS.md §2.3) as a [`TransformerHook`] on the block contract's attention seam: every
//! attention module keeps a call counter and its last output; inside the timestep window
//! `lo < t < hi` (both exclusive) it computes on every N-th call and serves the stored output
//! on the N−1 calls between, outside it always computes; the counter counts every call. As in
//! diffusers the state is per module, not per CFG branch: with separate CFG calls the
//! unconditional call can receive the conditional call's attention output. Every attention
//! module of DiT and FLUX.1 is self-attention ("spatial"), so the spatial range is the one
//! that applies.

use super::config::{CacheConfigError, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::record::{CallRecord, Decision, Reason};
use crate::models::blocks::{
    run_order, AttentionHook, AttentionOutput, BlockAt, BlockTransformer, Conditioning,
};
use candle_core::{Result, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// PAB's settings (diffusers' `PyramidAttentionBroadcastConfig` names, spatial attention).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PabParams {
    /// `spatial_attention_block_skip_range`: compute every N-th call, serve the stored output
    /// N−1 times in between (1 never reuses).
    pub block_skip_range: usize,
    /// `spatial_attention_timestep_skip_range`: reuse only while `lo < t < hi` (scheduler
    /// timesteps, ~1000 → 0).
    pub timestep_skip_range: (f64, f64),
}

impl Default for PabParams {
    /// diffusers' defaults (an unset range becomes 2, as `apply_pyramid_attention_broadcast`
    /// sets it).
    fn default() -> Self {
        PabParams {
            block_skip_range: 2,
            timestep_skip_range: (100.0, 800.0),
        }
    }
}

impl PabParams {
    pub fn validate(&self) -> std::result::Result<(), CacheConfigError> {
        if self.block_skip_range == 0 {
            return Err(super::config::invalid(
                "spatial_attention_block_skip_range",
                "must be at least 1 (1 never reuses)",
            ));
        }
        let (lo, hi) = self.timestep_skip_range;
        if !lo.is_finite() || !hi.is_finite() || lo >= hi {
            return Err(super::config::invalid(
                "spatial_attention_timestep_skip_range",
                "two timesteps, low then high (reuse happens strictly between them)",
            ));
        }
        Ok(())
    }
}

/// One attention module's state.
#[derive(Debug, Default)]
struct ModuleState {
    iteration: usize,
    cache: Option<AttentionOutput>,
}

/// What the modules did on one transformer call.
#[derive(Debug, Default)]
struct CallTally {
    reused: usize,
    computed: usize,
    /// Sum of the reused modules' shares of their blocks.
    saved_work: f64,
    outside_window: bool,
    first: bool,
}

/// The per-module rule, run around each attention module of a call.
struct Broadcast<'a, M: BlockTransformer + ?Sized> {
    params: &'a PabParams,
    timestep: f64,
    modules: &'a mut BTreeMap<BlockAt, ModuleState>,
    tally: CallTally,
    model: &'a M,
    streams: Option<crate::models::blocks::Streams>,
}

impl<M: BlockTransformer + ?Sized> AttentionHook for Broadcast<'_, M> {
    fn attention(
        &mut self,
        at: BlockAt,
        compute: &mut dyn FnMut() -> Result<AttentionOutput>,
    ) -> Result<AttentionOutput> {
        let state = self.modules.entry(at).or_default();
        let (lo, hi) = self.params.timestep_skip_range;
        let inside = lo < self.timestep && self.timestep < hi;
        let n = self.params.block_skip_range.max(1);
        let reuse = state.iteration > 0 && inside && !state.iteration.is_multiple_of(n);
        let output = match (&state.cache, reuse) {
            (Some(cached), true) => {
                self.tally.reused += 1;
                if let Some(s) = &self.streams {
                    self.tally.saved_work += self.model.attention_share(at, s);
                }
                cached.clone()
            }
            _ => {
                self.tally.computed += 1;
                self.tally.outside_window |= !inside;
                self.tally.first |= state.cache.is_none();
                compute()?
            }
        };
        state.cache = Some(output.clone());
        state.iteration += 1;
        Ok(output)
    }
}

/// The PAB hook; one per sampler run.
#[derive(Debug)]
pub struct PyramidAttentionBroadcast {
    params: PabParams,
    modules: BTreeMap<BlockAt, ModuleState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl PyramidAttentionBroadcast {
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.pab.validate()?;
        Ok(PyramidAttentionBroadcast {
            params: config.pab.clone(),
            modules: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }
}

/// The reason a call's modules computed.
fn compute_reason(tally: &CallTally) -> Reason {
    if tally.first {
        Reason::NoReference
    } else if tally.outside_window {
        Reason::OutsideWindow
    } else {
        Reason::ScheduleCompute
    }
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for PyramidAttentionBroadcast {
    fn reset(&mut self) {
        self.modules.clear();
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
        let (mut streams, call) = model.embed(x, timesteps, cond)?;
        let mut rule = Broadcast {
            params: &self.params,
            timestep: info.timestep,
            modules: &mut self.modules,
            tally: CallTally::default(),
            model,
            streams: None,
        };
        for &at in &order {
            rule.streams = Some(streams.clone());
            streams = match model.block_with_attention(at, &streams, &call, &mut rule)? {
                Some(s) => s,
                None => candle_core::bail!(
                    "pab: this model family exposes no attention seam to broadcast from"
                ),
            };
        }
        let tally = rule.tally;
        let out = model.finish(&streams, &call)?;
        model.device().synchronize()?;
        let held: usize = self
            .modules
            .values()
            .filter_map(|m| m.cache.as_ref().map(AttentionOutput::bytes))
            .sum();
        self.peak_bytes = self.peak_bytes.max(held);
        let (decision, reason) = if tally.reused > 0 {
            (Decision::Reused, Reason::ScheduleReuse)
        } else {
            (Decision::Computed, compute_reason(&tally))
        };
        self.records.push(CallRecord {
            step: info.step_index,
            branch: info.branch,
            decision,
            reason,
            diff: None,
            threshold: None,
            blocks_run: order.len(),
            blocks_total: order.len(),
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: (tally.reused > 0).then_some(order.len() as f64 - tally.saved_work),
            attention_reused: tally.reused,
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
