//! The one hook every transformer call goes through; the step cache will own it.

use crate::models::dit::DiT;
use candle_core::{Result, Tensor};

/// Where in the run a transformer call happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallInfo {
    pub step_index: usize,
    pub total_steps: usize,
    pub timestep: f64,
    /// True when the batch holds the conditional half then the unconditional (null-class) half.
    pub batched_cfg: bool,
}

/// Runs (or skips parts of) the transformer for one call.
pub trait TransformerHook {
    /// Called once before the first step of every run: drop all per-run state.
    fn reset(&mut self) {}

    fn call(
        &mut self,
        model: &DiT,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor>;
}

/// The uncached path: every block, every call.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainForward;

impl TransformerHook for PlainForward {
    fn call(
        &mut self,
        model: &DiT,
        _info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        labels: &Tensor,
    ) -> Result<Tensor> {
        model.forward(x, timesteps, labels)
    }
}
