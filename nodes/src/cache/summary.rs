//! A run's step-cache summary, like cache-dit's `summary()`: cached steps per branch, hit rate,
//! diff percentiles, block evaluations run vs. uncached (the ideal speedup), bytes held.

use super::record::{CallRecord, CfgBranch, Decision};
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of the recorded diffs (numpy's default linear interpolation; cache-dit's
/// negative sentinels included, as in its table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffStats {
    pub count: usize,
    pub min: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub max: f64,
}

/// numpy's `percentile(..., method="linear")` on sorted data, `q` in [0, 100].
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 100.0) / 100.0 * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    Some(a + (b - a) * (pos - lo as f64))
}

impl DiffStats {
    pub fn of(diffs: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = diffs.into_iter().filter(|d| !d.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        Some(DiffStats {
            count: v.len(),
            min: *v.first()?,
            p25: percentile(&v, 25.0)?,
            p50: percentile(&v, 50.0)?,
            p75: percentile(&v, 75.0)?,
            p95: percentile(&v, 95.0)?,
            max: *v.last()?,
        })
    }
}

/// One CFG branch's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchSummary {
    pub branch: CfgBranch,
    pub calls: usize,
    /// Steps whose call reused (cache-dit's `cached_steps`).
    pub cached_steps: Vec<usize>,
    pub hit_rate: f64,
    pub diffs: Option<DiffStats>,
}

/// The whole run's step-cache summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheSummary {
    /// The config signature, or `NoCache`.
    pub signature: String,
    pub calls: usize,
    pub reused_calls: usize,
    pub hit_rate: f64,
    pub branches: Vec<BranchSummary>,
    pub diffs: Option<DiffStats>,
    /// Calls per deciding rule (by label).
    pub reasons: BTreeMap<&'static str, usize>,
    pub block_evaluations: usize,
    pub block_evaluations_uncached: usize,
    /// The work done in block-equivalents: `block_evaluations`, less what attention-level
    /// reuse and half CFG batches saved inside the blocks that ran.
    pub block_work: f64,
    /// Block evaluations uncached ÷ the work done: the speedup if only blocks cost time.
    pub ideal_speedup: f64,
    /// The most bytes of residuals and calibrator state the cache held at once.
    pub cache_bytes: usize,
}

fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl CacheSummary {
    pub fn from_records(signature: &str, records: &[CallRecord], cache_bytes: usize) -> Self {
        let mut by_branch: BTreeMap<CfgBranch, Vec<&CallRecord>> = BTreeMap::new();
        let mut reasons = BTreeMap::new();
        for r in records {
            by_branch.entry(r.branch).or_default().push(r);
            *reasons.entry(r.reason.label()).or_insert(0) += 1;
        }
        let branches = by_branch
            .into_iter()
            .map(|(branch, calls)| {
                let cached_steps: Vec<usize> = calls
                    .iter()
                    .filter(|r| r.decision == Decision::Reused)
                    .map(|r| r.step)
                    .collect();
                BranchSummary {
                    branch,
                    calls: calls.len(),
                    hit_rate: rate(cached_steps.len(), calls.len()),
                    cached_steps,
                    diffs: DiffStats::of(calls.iter().filter_map(|r| r.diff)),
                }
            })
            .collect();
        let reused_calls = records
            .iter()
            .filter(|r| r.decision == Decision::Reused)
            .count();
        let run: usize = records.iter().map(|r| r.blocks_run).sum();
        let uncached: usize = records.iter().map(|r| r.blocks_total).sum();
        let work: f64 = records.iter().map(CallRecord::block_work).sum();
        CacheSummary {
            signature: signature.to_string(),
            calls: records.len(),
            reused_calls,
            hit_rate: rate(reused_calls, records.len()),
            branches,
            diffs: DiffStats::of(records.iter().filter_map(|r| r.diff)),
            reasons,
            block_evaluations: run,
            block_evaluations_uncached: uncached,
            block_work: work,
            ideal_speedup: if work <= 0.0 {
                1.0
            } else {
                uncached as f64 / work
            },
            cache_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::record::Reason;

    #[test]
    fn percentiles_match_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        // numpy.percentile([1,2,3,4,10], [25,50,75,95]) = [2, 3, 4, 8.8]
        assert_eq!(percentile(&v, 25.0), Some(2.0));
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 75.0), Some(4.0));
        assert!((percentile(&v, 95.0).unwrap_or(0.0) - 8.8).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), None);
        let s = DiffStats::of([0.3, -1.0, 0.1]).expect("stats");
        assert_eq!(
            (s.min, s.p50, s.max),
            (-1.0, 0.1, 0.3),
            "sentinels included"
        );
    }

    fn rec(step: usize, branch: CfgBranch, reused: bool, diff: Option<f64>) -> CallRecord {
        CallRecord {
            step,
            branch,
            decision: if reused {
                Decision::Reused
            } else {
                Decision::Computed
            },
            reason: if reused {
                Reason::DiffBelow
            } else {
                Reason::Warmup
            },
            diff,
            threshold: None,
            blocks_run: if reused { 2 } else { 6 },
            blocks_total: 6,
            ms: 1.0,
            work: None,
            attention_reused: 0,
            pattern: None,
        }
    }

    #[test]
    fn summary_counts_per_branch_and_blocks() {
        let records = [
            rec(0, CfgBranch::Cond, false, None),
            rec(0, CfgBranch::Uncond, false, None),
            rec(1, CfgBranch::Cond, true, Some(0.05)),
            rec(1, CfgBranch::Uncond, false, Some(0.2)),
        ];
        let s = CacheSummary::from_records("sig", &records, 1024);
        assert_eq!((s.calls, s.reused_calls), (4, 1));
        assert_eq!(s.branches.len(), 2);
        assert_eq!(s.branches[0].cached_steps, vec![1]);
        assert_eq!(s.branches[0].hit_rate, 0.5);
        assert!(s.branches[1].cached_steps.is_empty());
        assert_eq!(
            (s.block_evaluations, s.block_evaluations_uncached),
            (20, 24)
        );
        assert!((s.ideal_speedup - 1.2).abs() < 1e-12);
        assert_eq!(s.reasons.get("warmup"), Some(&3));
        assert_eq!(s.diffs.map(|d| d.count), Some(2));
    }
}
