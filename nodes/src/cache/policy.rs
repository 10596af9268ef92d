//! cache-dit's step policy (ALGORITHMS.md §1.6): for one CFG branch and step, the first rule
//! that fires decides (warmup, steps mask, max cached, max continuous, accumulated diff,
//! threshold, no reference, then the measured diff), with cache-dit's cached-step counters.

use super::config::{DbCacheConfig, MaskPolicy};
use super::indicator::Similarity;
use super::record::{Decision, Reason};
use std::collections::BTreeMap;

/// A step whose outcome is known before the run (counter schedules, static masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Compute(Reason),
    Reuse(Reason),
}

/// DBCache's rules for one run (the step count is known, so the SCM mask is built).
#[derive(Debug, Clone, PartialEq)]
pub struct DbRules {
    /// `W`: cache-dit truncates it to the mask's leading run of computes.
    pub warmup: usize,
    pub interval: usize,
    pub mask: Option<(Vec<bool>, MaskPolicy)>,
    pub max_cached: i64,
    pub max_continuous: i64,
    pub max_accumulated: Option<f64>,
    pub threshold: f64,
}

impl DbRules {
    pub fn new(db: &DbCacheConfig, mask: Option<(Vec<bool>, MaskPolicy)>) -> Self {
        let leading = mask
            .as_ref()
            .map(|(m, _)| m.iter().take_while(|&&c| c).count());
        DbRules {
            warmup: leading.map_or(db.max_warmup_steps, |l| l.min(db.max_warmup_steps)),
            interval: db.warmup_interval.max(1),
            mask,
            max_cached: db.max_cached_steps,
            max_continuous: db.max_continuous_cached_steps,
            max_accumulated: db.max_accumulated_residual_diff_threshold,
            threshold: db.residual_diff_threshold,
        }
    }

    /// `step ∈ range(0, W, I)`: the forced computes of the warmup window.
    pub fn in_warmup(&self, step: usize) -> bool {
        step < self.warmup && step.is_multiple_of(self.interval)
    }
}

/// The decision rules of one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Rules {
    /// A schedule fixed before the run (the fixed and dynamic strategies): one plan per step.
    Schedule(Vec<Plan>),
    /// DBCache (the adaptive strategy).
    DbCache(DbRules),
}

/// What the rules say before any tensor is looked at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    Compute(Reason),
    Reuse(Reason),
    /// Rules 1–6 let it through: compare the residual with this threshold.
    Measure {
        threshold: f64,
    },
}

/// One call's decision, as recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    pub diff: Option<f64>,
    pub threshold: Option<f64>,
}

impl Verdict {
    fn new(decision: Decision, reason: Reason) -> Self {
        Verdict {
            decision,
            reason,
            diff: None,
            threshold: None,
        }
    }
}

/// The counters of one CFG branch (cache-dit keeps a plain and a `cfg_` copy of each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BranchPolicy {
    cached_steps: Vec<usize>,
    continuous: i64,
    accumulated_diff: f64,
    /// The first diff recorded per step (sentinels included).
    diffs: BTreeMap<usize, f64>,
}

impl BranchPolicy {
    /// Rules 1–6 of §1.6, in order, after cache-dit's `mark_step_begin`: a step whose previous
    /// step of this branch was computed starts a new streak.
    pub fn gate(&mut self, rules: &Rules, step: usize) -> Gate {
        if self.cached_steps.last() != step.checked_sub(1).as_ref() {
            self.continuous = 0;
        }
        let r = match rules {
            Rules::Schedule(plan) => {
                return match plan.get(step) {
                    Some(Plan::Reuse(reason)) => Gate::Reuse(*reason),
                    Some(Plan::Compute(reason)) => Gate::Compute(*reason),
                    None => Gate::Compute(Reason::ScheduleCompute),
                }
            }
            Rules::DbCache(r) => r,
        };
        if r.in_warmup(step) {
            return Gate::Compute(Reason::Warmup);
        }
        if let Some((mask, policy)) = &r.mask {
            // Steps past the mask's end are cache steps, as in cache-dit.
            if mask.get(step) == Some(&true) {
                return Gate::Compute(Reason::ScheduleCompute);
            }
            if *policy == MaskPolicy::Static {
                return Gate::Reuse(Reason::ScheduleReuse);
            }
        }
        if r.max_cached >= 0 && self.cached_steps.len() as i64 >= r.max_cached {
            return Gate::Compute(Reason::MaxCached);
        }
        if r.max_continuous >= 0 && self.continuous >= r.max_continuous {
            return Gate::Compute(Reason::MaxContinuous);
        }
        if let Some(limit) = r.max_accumulated {
            if limit > 0.0 && self.accumulated_diff >= limit {
                return Gate::Compute(Reason::AccumulatedDiff);
            }
        }
        if r.threshold <= 0.0 {
            return Gate::Compute(Reason::ThresholdOff);
        }
        Gate::Measure {
            threshold: r.threshold,
        }
    }

    /// The whole decision: the gate, then rule 7 (nothing stored to compare with or reuse)
    /// and rule 8 (`measure` compares the residuals). Counts a reuse.
    pub fn decide<E>(
        &mut self,
        rules: &Rules,
        step: usize,
        has_reference: bool,
        measure: impl FnOnce(f64) -> Result<Similarity, E>,
    ) -> Result<Verdict, E> {
        let verdict = match self.gate(rules, step) {
            Gate::Compute(reason) => Verdict::new(Decision::Computed, reason),
            Gate::Reuse(_) | Gate::Measure { .. } if !has_reference => {
                Verdict::new(Decision::Computed, Reason::NoReference)
            }
            Gate::Reuse(reason) => Verdict::new(Decision::Reused, reason),
            Gate::Measure { threshold } => {
                let s = measure(threshold)?;
                self.record_diff(step, s.diff);
                let (decision, reason) = if s.similar {
                    (Decision::Reused, Reason::DiffBelow)
                } else {
                    (Decision::Computed, Reason::DiffAbove)
                };
                Verdict {
                    decision,
                    reason,
                    diff: Some(s.diff),
                    threshold: Some(threshold),
                }
            }
        };
        if verdict.decision == Decision::Reused {
            self.add_cached_step(step);
        }
        Ok(verdict)
    }

    /// `add_residual_diff`: keeps the first diff of a step; positive diffs accumulate.
    pub fn record_diff(&mut self, step: usize, diff: f64) {
        self.diffs.entry(step).or_insert(diff);
        if diff > 0.0 {
            self.accumulated_diff += diff;
        }
    }

    /// `add_cached_step` as cache-dit 1.5.3 does it: one more hit in the current streak (the
    /// streak itself is reset in [`BranchPolicy::gate`] after any computed step).
    pub fn add_cached_step(&mut self, step: usize) {
        self.continuous += 1;
        self.cached_steps.push(step);
    }

    pub fn cached_steps(&self) -> &[usize] {
        &self.cached_steps
    }

    pub fn continuous(&self) -> i64 {
        self.continuous
    }

    pub fn accumulated_diff(&self) -> f64 {
        self.accumulated_diff
    }

    /// The diff recorded for `step`, if any.
    pub fn diff_at(&self, step: usize) -> Option<f64> {
        self.diffs.get(&step).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::indicator::{sentinel, Similarity};
    use std::convert::Infallible;

    fn rules(f: impl FnOnce(&mut DbCacheConfig)) -> Rules {
        let mut db = DbCacheConfig {
            max_warmup_steps: 2,
            residual_diff_threshold: 0.1,
            ..DbCacheConfig::default()
        };
        f(&mut db);
        let mask = None;
        Rules::DbCache(DbRules::new(&db, mask))
    }

    /// Runs a recorded diff trace (one diff per step) through the policy.
    fn replay(rules: &Rules, diffs: &[f64]) -> Vec<(Decision, Reason)> {
        let mut p = BranchPolicy::default();
        diffs
            .iter()
            .enumerate()
            .map(|(step, &d)| {
                let v = p
                    .decide(rules, step, step > 0, |thr| {
                        Ok::<_, Infallible>(sentinel(thr).unwrap_or(Similarity {
                            diff: d,
                            similar: d < thr,
                        }))
                    })
                    .unwrap_or_else(|e| match e {});
                (v.decision, v.reason)
            })
            .collect()
    }

    use Decision::{Computed as C, Reused as R};

    #[test]
    fn each_rule_fires_in_cache_dits_order() {
        let small = [0.01; 8];
        // Warmup, then the diff decides.
        let out = replay(&rules(|_| {}), &small);
        assert_eq!(out[0], (C, Reason::Warmup));
        assert_eq!(out[1], (C, Reason::Warmup));
        assert_eq!(out[2], (R, Reason::DiffBelow));
        // The threshold is strict; a large diff computes.
        let out = replay(&rules(|_| {}), &[0.0, 0.0, 0.1, 0.5, 0.09]);
        assert_eq!(
            &out[2..],
            &[
                (C, Reason::DiffAbove),
                (C, Reason::DiffAbove),
                (R, Reason::DiffBelow)
            ]
        );
        // max_cached_steps.
        let out = replay(&rules(|d| d.max_cached_steps = 2), &small);
        assert_eq!(out[4], (C, Reason::MaxCached));
        assert_eq!(out[7], (C, Reason::MaxCached));
        // max_cached_steps = 0 and max_continuous = 0 never cache.
        let out = replay(&rules(|d| d.max_cached_steps = 0), &small);
        assert!(out[2..].iter().all(|&o| o == (C, Reason::MaxCached)));
        let out = replay(&rules(|d| d.max_continuous_cached_steps = 0), &small);
        assert!(out[2..].iter().all(|&o| o == (C, Reason::MaxContinuous)));
        // The accumulated diff latches for the rest of the run, computed steps included.
        let trace = [0.3, 0.3, 0.05, 0.2, 0.05, 0.05, 0.05];
        let out = replay(
            &rules(|d| d.max_accumulated_residual_diff_threshold = Some(0.3)),
            &trace,
        );
        assert_eq!(
            out[2],
            (R, Reason::DiffBelow),
            "warmup diffs are not measured"
        );
        assert_eq!(out[3], (C, Reason::DiffAbove));
        assert_eq!(out[4], (R, Reason::DiffBelow));
        assert_eq!(out[5], (C, Reason::AccumulatedDiff), "0.05+0.2+0.05 ≥ 0.3");
        assert_eq!(out[6], (C, Reason::AccumulatedDiff));
        // Thresholds ≤ 0 never cache; ≥ 1 always cache (sentinel -1).
        let out = replay(&rules(|d| d.residual_diff_threshold = 0.0), &small);
        assert!(out[2..].iter().all(|&o| o == (C, Reason::ThresholdOff)));
        let out = replay(&rules(|d| d.residual_diff_threshold = 1.0), &[5.0; 4]);
        assert_eq!(&out[2..], &[(R, Reason::DiffBelow), (R, Reason::DiffBelow)]);
    }

    #[test]
    fn warmup_interval_only_forces_multiples() {
        let r = rules(|d| {
            d.max_warmup_steps = 8;
            d.warmup_interval = 2;
        });
        let out = replay(&r, &[0.01; 10]);
        let warm: Vec<usize> = (0..10).filter(|&s| out[s] == (C, Reason::Warmup)).collect();
        assert_eq!(warm, vec![0, 2, 4, 6]);
        assert_eq!(out[1], (R, Reason::DiffBelow), "odd warmup steps may hit");
    }

    #[test]
    fn no_reference_computes_without_measuring() {
        let r = rules(|d| d.max_warmup_steps = 0);
        let mut p = BranchPolicy::default();
        let v = p
            .decide(&r, 0, false, |_| -> Result<Similarity, &str> {
                Err("measured")
            })
            .expect("not measured");
        assert_eq!(
            (v.decision, v.reason, v.diff),
            (C, Reason::NoReference, None)
        );
    }

    #[test]
    fn masks_force_computes_and_static_cache_steps_skip_the_limits() {
        let mask = vec![true, true, true, false, false, true, false, false];
        let db = DbCacheConfig {
            max_warmup_steps: 8,
            max_cached_steps: 0,
            ..DbCacheConfig::default()
        };
        let stat = Rules::DbCache(DbRules::new(&db, Some((mask.clone(), MaskPolicy::Static))));
        if let Rules::DbCache(r) = &stat {
            assert_eq!(r.warmup, 3, "warmup truncated to the leading computes");
        }
        let out = replay(&stat, &[1.0; 10]);
        assert_eq!(
            out[3],
            (R, Reason::ScheduleReuse),
            "static bypasses max_cached"
        );
        assert_eq!(out[5], (C, Reason::ScheduleCompute));
        assert_eq!(
            out[9],
            (R, Reason::ScheduleReuse),
            "past the mask: cache step"
        );
        let dynamic = Rules::DbCache(DbRules::new(
            &DbCacheConfig {
                max_warmup_steps: 8,
                residual_diff_threshold: 0.1,
                ..DbCacheConfig::default()
            },
            Some((mask, MaskPolicy::Dynamic)),
        ));
        let out = replay(&dynamic, &[0.01, 0.01, 0.01, 0.01, 0.5, 0.01, 0.01, 0.01]);
        assert_eq!(out[3], (R, Reason::DiffBelow));
        assert_eq!(out[4], (C, Reason::DiffAbove), "dynamic: the diff decides");
        assert_eq!(out[5], (C, Reason::ScheduleCompute));
    }

    #[test]
    fn continuous_counter_follows_the_worked_example() {
        // §1.6 (cache-dit 1.5.3): MCC = 3, warmup 4, every diff small except at steps 12 and
        // 15 (step 12 computing makes 13 the start of a streak, as in the table).
        let r = rules(|d| {
            d.max_warmup_steps = 4;
            d.max_continuous_cached_steps = 3;
        });
        let mut p = BranchPolicy::default();
        let mut seen = Vec::new();
        for step in 0..21 {
            let diff = if step == 12 || step == 15 { 0.5 } else { 0.01 };
            let v = p
                .decide(&r, step, true, |thr| {
                    Ok::<_, Infallible>(Similarity {
                        diff,
                        similar: diff < thr,
                    })
                })
                .unwrap_or_else(|e| match e {});
            if step >= 13 {
                seen.push((step, v.decision, v.reason, p.continuous()));
            }
        }
        assert_eq!(
            seen,
            vec![
                (13, R, Reason::DiffBelow, 1),
                (14, R, Reason::DiffBelow, 2),
                (15, C, Reason::DiffAbove, 2),
                (16, R, Reason::DiffBelow, 1),
                (17, R, Reason::DiffBelow, 2),
                (18, R, Reason::DiffBelow, 3),
                (19, C, Reason::MaxContinuous, 3),
                (20, R, Reason::DiffBelow, 1),
            ]
        );
    }

    #[test]
    fn any_computed_step_starts_a_new_streak() {
        // A diff-driven compute resets the streak just as rule 4 does, so a limit of 3 allows
        // three hits after it (the old reading forced a compute one step early).
        let r = rules(|d| {
            d.max_warmup_steps = 8;
            d.max_continuous_cached_steps = 3;
        });
        let mut trace = vec![0.0; 8];
        trace.extend([0.01, 0.01, 0.5, 0.01, 0.01, 0.01, 0.01, 0.01]);
        let out = replay(&r, &trace);
        let decisions: Vec<Decision> = out[8..].iter().map(|o| o.0).collect();
        assert_eq!(decisions, vec![R, R, C, R, R, R, C, R]);
        assert_eq!(out[10], (C, Reason::DiffAbove));
        assert_eq!(out[14], (C, Reason::MaxContinuous));
        // A limit of 1 alternates.
        let r = rules(|d| d.max_continuous_cached_steps = 1);
        let out = replay(&r, &[0.01; 8]);
        let decisions: Vec<Decision> = out[2..].iter().map(|o| o.0).collect();
        assert_eq!(decisions, vec![R, C, R, C, R, C]);
    }

    #[test]
    fn only_the_first_diff_of_a_step_is_kept_and_positives_accumulate() {
        let mut p = BranchPolicy::default();
        p.record_diff(3, 0.2);
        p.record_diff(3, 0.4);
        p.record_diff(4, -1.0);
        assert_eq!(p.diff_at(3), Some(0.2));
        assert_eq!(p.diff_at(4), Some(-1.0));
        assert!((p.accumulated_diff() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn schedules_decide_without_measuring() {
        let plan = Rules::Schedule(vec![
            Plan::Compute(Reason::Warmup),
            Plan::Reuse(Reason::ScheduleReuse),
            Plan::Compute(Reason::LastStep),
        ]);
        let mut p = BranchPolicy::default();
        let mut out = Vec::new();
        for step in 0..3 {
            let v = p
                .decide(&plan, step, step > 0, |_| -> Result<Similarity, &str> {
                    Err("measured")
                })
                .expect("no measure");
            out.push((v.decision, v.reason));
        }
        assert_eq!(
            out,
            vec![
                (C, Reason::Warmup),
                (R, Reason::ScheduleReuse),
                (C, Reason::LastStep)
            ]
        );
        assert_eq!(p.cached_steps(), &[1]);
    }
}
