//! What the step cache did on each transformer call: the records behind the live step timeline,
//! the Detailed Stats node and `stats.json`.

use serde::{Deserialize, Serialize};

/// Which classifier-free-guidance branch a transformer call served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CfgBranch {
    /// No guidance, or batched guidance (conditional and null-class halves in one call).
    Batched,
    /// The conditional call when guidance runs as separate calls.
    Cond,
    /// The unconditional (null-class) call when guidance runs as separate calls.
    Uncond,
}

impl CfgBranch {
    pub fn name(self) -> &'static str {
        match self {
            CfgBranch::Batched => "batched",
            CfgBranch::Cond => "cond",
            CfgBranch::Uncond => "uncond",
        }
    }
}

/// Whether the middle blocks ran or their residual was reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Computed,
    Reused,
}

/// Why a call was computed or reused (the rule that decided, in cache-dit's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// No step cache on this sampler: every block runs.
    Uncached,
    /// Inside the warmup window.
    Warmup,
    /// The steps-computation mask (or a counter schedule) says compute.
    ScheduleCompute,
    /// The steps-computation mask (static policy) or a counter schedule says reuse.
    ScheduleReuse,
    /// The final step always computes.
    LastStep,
    /// `max_cached_steps` reached.
    MaxCached,
    /// `max_continuous_cached_steps` reached.
    MaxContinuous,
    /// The accumulated residual diff passed its threshold (latched for the run).
    AccumulatedDiff,
    /// `residual_diff_threshold` ≤ 0: the indicator never allows reuse.
    ThresholdOff,
    /// Nothing stored yet to compare with or reuse.
    NoReference,
    /// The residual diff was at or above the threshold.
    DiffAbove,
    /// The residual diff was below the threshold.
    DiffBelow,
    /// Calibration: every call computes and records its ratio (MagCache).
    Calibrating,
    /// Outside the method's timestep window: it computes there (PAB, EasyCache).
    OutsideWindow,
}

impl Reason {
    /// A short label for tooltips and tables.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Uncached => "uncached",
            Reason::Warmup => "warmup",
            Reason::ScheduleCompute => "schedule: compute",
            Reason::ScheduleReuse => "schedule: reuse",
            Reason::LastStep => "last step",
            Reason::MaxCached => "max cached steps",
            Reason::MaxContinuous => "max continuous cached",
            Reason::AccumulatedDiff => "accumulated diff",
            Reason::ThresholdOff => "threshold ≤ 0 (off)",
            Reason::NoReference => "no reference yet",
            Reason::DiffAbove => "diff ≥ threshold",
            Reason::DiffBelow => "diff < threshold",
            Reason::Calibrating => "calibrating",
            Reason::OutsideWindow => "outside the window",
        }
    }

    /// A compute that a guard imposed although the indicator might have allowed reuse; the
    /// timeline draws these as "forced".
    pub fn is_forced(self) -> bool {
        matches!(
            self,
            Reason::LastStep | Reason::MaxCached | Reason::MaxContinuous | Reason::AccumulatedDiff
        )
    }
}

/// One transformer call of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// 0-based denoising step.
    pub step: usize,
    pub branch: CfgBranch,
    pub decision: Decision,
    pub reason: Reason,
    /// Relative-L1 residual diff measured on this call, when one was measured. Negative values
    /// are cache-dit's sentinels: −1 = threshold ≥ 1 (always similar), −2 = shape changed.
    pub diff: Option<f64>,
    /// The threshold the diff was compared with, when a threshold rule applied.
    pub threshold: Option<f64>,
    /// Transformer blocks evaluated on this call.
    pub blocks_run: usize,
    /// Blocks an uncached call evaluates.
    pub blocks_total: usize,
    /// Wall time of the call (device-synchronised), in ms.
    pub ms: f64,
    /// The call's work in block-equivalents where it is not `blocks_run`: attention served
    /// from a cache (less each reused module's share of its block) or half a CFG batch
    /// (FasterCache). The ideal speedup counts this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<f64>,
    /// Attention modules served from a cache on this call (PAB, FasterCache).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attention_reused: usize,
    /// Block-level methods (DBPrune): one letter per block in run order, what happened to it:
    /// `F` never prunable, `W` warmup, `S` mask says compute, `M` max cached steps, `K` max
    /// continuous, `B` nothing stored yet, `T` threshold off, `C` measured and computed, `P`
    /// measured and pruned, `s` pruned by a static mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CallRecord {
    /// The call's work in block-equivalents (`blocks_run` unless `work` says otherwise).
    pub fn block_work(&self) -> f64 {
        self.work.unwrap_or(self.blocks_run as f64)
    }
}

impl CallRecord {
    /// The record of a call that ran every block with no step cache involved.
    pub fn uncached(step: usize, branch: CfgBranch, blocks: usize, ms: f64) -> Self {
        CallRecord {
            step,
            branch,
            decision: Decision::Computed,
            reason: Reason::Uncached,
            diff: None,
            threshold: None,
            blocks_run: blocks,
            blocks_total: blocks,
            ms,
            work: None,
            attention_reused: 0,
            pattern: None,
        }
    }
}
