//! Detailed Stats: shows a sampler run's step-cache statistics (the editor draws its body from
//! the live step events; the CLI prints its summary). Its run checks that the statistics add
//! up and passes them on as an event.

use crate::cache::{CacheSummary, Decision};
use crate::exec::context::NodeContext;
use crate::registry::Params;
use crate::registry::{Inputs, KindSpec, NodeError, NodeKind, Outputs, PortSpec, PortType};
use crate::sampling::measure::{Measured, Verdict};
use crate::sampling::stats::SamplerStats;

pub struct DetailedStats;

fn inconsistent(what: String) -> NodeError {
    NodeError::Param(
        "stats".into(),
        format!("the statistics do not add up: {what}"),
    )
}

/// Checks that the records, the counters and the summary tell the same story.
pub fn check_stats(stats: &SamplerStats) -> Result<(), NodeError> {
    let run: usize = stats.calls.iter().map(|c| c.blocks_run).sum();
    if stats.transformer_calls != stats.calls.len() {
        return Err(inconsistent(format!(
            "{} calls counted, {} recorded",
            stats.transformer_calls,
            stats.calls.len()
        )));
    }
    if stats.block_evaluations != run {
        return Err(inconsistent(format!(
            "{} block evaluations counted, {run} recorded",
            stats.block_evaluations
        )));
    }
    if let Some(bad) = stats
        .calls
        .iter()
        .find(|c| c.blocks_run > c.blocks_total || c.step >= stats.steps.len())
    {
        return Err(inconsistent(format!("call record {bad:?}")));
    }
    if let Some(summary) = &stats.summary {
        let expected =
            CacheSummary::from_records(&summary.signature, &stats.calls, summary.cache_bytes);
        if &expected != summary {
            return Err(inconsistent(
                "the summary differs from the call records".into(),
            ));
        }
        let reused = stats
            .calls
            .iter()
            .filter(|c| c.decision == Decision::Reused)
            .count();
        if reused != summary.reused_calls {
            return Err(inconsistent("reused calls".into()));
        }
        if let Some(m) = &stats.measured {
            check_measured(m, summary.ideal_speedup)?;
        }
    }
    Ok(())
}

/// A measured speedup must be the ratio of the medians, against this run's ideal, with the
/// verdict its range gives: a speedup beyond the ideal never passes as a result.
fn check_measured(m: &Measured, ideal: f64) -> Result<(), NodeError> {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let ratio = m.baseline.wall_ms.median / m.cached.wall_ms.median.max(f64::MIN_POSITIVE);
    if !close(m.ideal_speedup, ideal) || !close(m.speedup, ratio) {
        return Err(inconsistent(format!(
            "measured speedup {:.3} against ideal {:.3}",
            m.speedup, m.ideal_speedup
        )));
    }
    let verdict = Verdict::of(m.speedup, m.speedup_min, ideal);
    if m.verdict != verdict {
        return Err(inconsistent(format!(
            "verdict {:?} where the measured range gives {:?}",
            m.verdict, verdict
        )));
    }
    Ok(())
}

impl NodeKind for DetailedStats {
    fn spec(&self) -> KindSpec {
        KindSpec {
            name: "DetailedStats",
            title: "Detailed Stats",
            category: "step cache",
            help: "Shows what the step cache did on a Sampler run: each step computed or reused \
                   and why, residual diffs, cached steps per CFG branch, hit rate, block \
                   evaluations (ideal speedup), measured speedup and memory.",
            inputs: vec![PortSpec::required(
                "stats",
                PortType::RunStats,
                "a Sampler's `stats` output",
            )],
            outputs: vec![],
            params: vec![],
        }
    }

    fn run(
        &self,
        ctx: &NodeContext,
        inputs: &Inputs,
        _params: &Params,
    ) -> Result<Outputs, NodeError> {
        let stats = inputs.require("stats")?.as_run_stats("stats")?;
        check_stats(stats)?;
        ctx.stats(stats.clone());
        Ok(Outputs::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CallRecord, CfgBranch, Reason};
    use crate::sampling::measure::RunTime;
    use crate::sampling::stats::StepStat;

    fn stats() -> SamplerStats {
        let calls: Vec<CallRecord> = (0..4)
            .map(|step| CallRecord {
                step,
                branch: CfgBranch::Batched,
                decision: if step % 2 == 1 {
                    Decision::Reused
                } else {
                    Decision::Computed
                },
                reason: Reason::ScheduleReuse,
                diff: None,
                threshold: None,
                blocks_run: if step % 2 == 1 { 2 } else { 6 },
                blocks_total: 6,
                ms: 1.0,
                work: None,
                attention_reused: 0,
                pattern: None,
            })
            .collect();
        SamplerStats {
            transformer_calls: 4,
            block_evaluations: 16,
            steps: (0..4)
                .map(|index| StepStat {
                    index,
                    timestep: 0.0,
                    ms: 1.0,
                })
                .collect(),
            summary: Some(CacheSummary::from_records("sig", &calls, 0)),
            calls,
            ..SamplerStats::default()
        }
    }

    #[test]
    fn consistent_stats_pass_and_tampered_ones_name_the_input() {
        assert!(check_stats(&stats()).is_ok());
        let mut s = stats();
        s.block_evaluations = 24;
        let err = check_stats(&s)
            .expect_err("counted blocks differ")
            .to_string();
        assert!(
            err.contains("`stats`") && err.contains("block evaluations"),
            "{err}"
        );
        let mut s = stats();
        s.calls[1].decision = Decision::Computed;
        assert!(
            check_stats(&s).is_err(),
            "summary no longer matches the records"
        );
        let mut s = stats();
        s.calls[0].step = 9;
        assert!(check_stats(&s).is_err(), "a call past the last step");
    }

    #[test]
    fn a_speedup_beyond_the_ideal_cannot_pass_as_a_result() {
        let mut s = stats();
        let ideal = s.summary.as_ref().map_or(1.0, |x| x.ideal_speedup);
        let run = |wall_ms| RunTime {
            wall_ms,
            cpu_ms: None,
        };
        s.measured = Measured::from_rounds(
            &[run(300.0), run(310.0), run(290.0)],
            &[run(100.0), run(105.0), run(95.0)],
            ideal,
            (30.0, 0.9),
            true,
            Some(4.0),
        );
        assert_eq!(s.measured.as_ref().map(|m| m.verdict), Some(Verdict::Noisy));
        assert!(check_stats(&s).is_ok());
        let mut tampered = s.clone();
        if let Some(m) = tampered.measured.as_mut() {
            m.verdict = Verdict::Plausible;
        }
        let err = check_stats(&tampered).expect_err("verdict").to_string();
        assert!(err.contains("verdict"), "{err}");
        let mut tampered = s;
        if let Some(m) = tampered.measured.as_mut() {
            m.speedup = 1.1;
        }
        assert!(
            check_stats(&tampered).is_err(),
            "not the ratio of the medians"
        );
    }
}
