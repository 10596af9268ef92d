//! The one hook every transformer call goes through: the plain forward, or the step cache
//! ([`super::StepCache`]). Generic over the block contract, so every model family gets both.

use super::{CallRecord, CfgBranch};
use crate::models::blocks::{self, BlockTransformer, Conditioning};
use crate::schedulers::ShareMap;
use candle_core::{Result, Tensor};
use std::time::Instant;

/// Where in the run a transformer call happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallInfo {
    pub step_index: usize,
    pub total_steps: usize,
    pub timestep: f64,
    /// True when the batch holds the conditional half then the unconditional (null) half.
    pub batched_cfg: bool,
    /// The guidance branch this call serves (separate CFG makes two calls per step).
    pub branch: CfgBranch,
    /// Where shares of the run lie on the timestep scale (windows given in percent).
    pub shares: ShareMap,
}

/// Runs (or skips parts of) the transformer for one call.
pub trait TransformerHook<M: BlockTransformer + ?Sized> {
    /// Called once before the first step of every run: drop all per-run state.
    fn reset(&mut self) {}

    fn call(
        &mut self,
        model: &M,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor>;

    /// The records of the calls made since the last drain (the denoise loop drains once per
    /// step and reports them with the step).
    fn drain_records(&mut self) -> Vec<CallRecord>;

    /// The most bytes of tensors the hook held between calls during the current run.
    fn peak_bytes(&self) -> usize {
        0
    }
}

/// The uncached path: every block, every call.
#[derive(Debug, Default, Clone)]
pub struct PlainForward {
    records: Vec<CallRecord>,
}

impl PlainForward {
    /// The records of the calls since the last drain.
    pub fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for PlainForward {
    fn reset(&mut self) {
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
        let out = blocks::forward(model, x, timesteps, cond)?;
        model.device().synchronize()?;
        self.records.push(CallRecord::uncached(
            info.step_index,
            info.branch,
            blocks::total_blocks(model.block_lists()),
            started.elapsed().as_secs_f64() * 1e3,
        ));
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        PlainForward::drain_records(self)
    }
}
