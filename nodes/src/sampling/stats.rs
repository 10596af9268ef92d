//! Per-run sampler statistics: what the Sampler node reports and the CLI writes to stats.json.

use super::denoise::StepRecord;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SamplerStats {
    pub model: String,
    pub scheduler: String,
    pub seed: u64,
    pub class_labels: Vec<u32>,
    pub guidance: f64,
    /// Transformer calls made (one per step; a CFG batch counts once).
    pub transformer_calls: usize,
    /// Block evaluations run (calls × blocks when nothing is skipped).
    pub block_evaluations: usize,
    pub total_ms: f64,
    pub steps: Vec<StepStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStat {
    pub index: usize,
    pub timestep: f64,
    pub ms: f64,
}

impl From<&StepRecord> for StepStat {
    fn from(r: &StepRecord) -> Self {
        StepStat {
            index: r.index,
            timestep: r.timestep,
            ms: r.ms,
        }
    }
}
