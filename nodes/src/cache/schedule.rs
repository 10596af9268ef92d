//! Step schedules: the fixed and dynamic counter strategies as per-step plans, the rules of a
//! run, and the schedule preview the editor draws before a run.

use super::config::{
    CacheConfigError, DbCacheConfig, MaskPolicy, MaskSource, StepCacheConfig, Strategy,
};
use super::indicator::sentinel;
use super::policy::{BranchPolicy, DbRules, Plan, Rules};
use super::record::{Decision, Reason};
use super::scm::steps_mask;
use serde::Serialize;

/// Fixed: warmup computes, then step `s` reuses iff `(s − warmup) mod k == k − 1` (one step in
/// `k` reused; `k = 1` reuses every step after warmup).
pub fn fixed_plan(steps: usize, warmup: usize, k: usize) -> Vec<Plan> {
    let k = k.max(1);
    (0..steps)
        .map(|s| {
            if s < warmup {
                Plan::Compute(Reason::Warmup)
            } else if (s - warmup) % k == k - 1 {
                Plan::Reuse(Reason::ScheduleReuse)
            } else {
                Plan::Compute(Reason::ScheduleCompute)
            }
        })
        .collect()
}

/// Dynamic: after warmup the share of reused steps rises linearly from `1/k` to
/// `max_run/(max_run + 1)` (structure early, detail late), placed by error diffusion over the
/// step index; never more than `max_run` reuses in a row; the last step always computes.
pub fn dynamic_plan(steps: usize, warmup: usize, k: usize, max_run: usize) -> Vec<Plan> {
    let start = 1.0 / k.max(1) as f64;
    let end = max_run as f64 / (max_run as f64 + 1.0);
    let span = steps.saturating_sub(warmup + 1).max(1) as f64;
    let mut credit = 0.0;
    let mut run = 0;
    (0..steps)
        .map(|s| {
            if s < warmup {
                return Plan::Compute(Reason::Warmup);
            }
            if s + 1 == steps {
                return Plan::Compute(Reason::LastStep);
            }
            let progress = (s - warmup) as f64 / span;
            credit += start + (end - start) * progress;
            if credit < 1.0 {
                run = 0;
                Plan::Compute(Reason::ScheduleCompute)
            } else if run >= max_run {
                run = 0;
                Plan::Compute(Reason::MaxContinuous)
            } else {
                credit -= 1.0;
                run += 1;
                Plan::Reuse(Reason::ScheduleReuse)
            }
        })
        .collect()
}

/// The steps-computation mask of a run of `steps` steps (built for that step count), with its
/// policy; `None` without SCM.
pub fn rules_mask(
    db: &DbCacheConfig,
    steps: usize,
) -> Result<Option<(Vec<bool>, MaskPolicy)>, CacheConfigError> {
    Ok(match &db.steps_mask {
        None => None,
        Some(m) => {
            let bits = match &m.source {
                MaskSource::Preset(p) => steps_mask(*p, steps)?,
                MaskSource::Custom(bits) => bits.clone(),
            };
            Some((bits, m.policy))
        }
    })
}

/// The rules of a run of `steps` steps (builds the SCM mask for that step count).
pub fn rules_for_run(config: &StepCacheConfig, steps: usize) -> Result<Rules, CacheConfigError> {
    config.validate()?;
    let db = &config.db;
    Ok(match config.strategy {
        Strategy::Fixed => {
            Rules::Schedule(fixed_plan(steps, db.max_warmup_steps, config.skip_interval))
        }
        Strategy::Dynamic => Rules::Schedule(dynamic_plan(
            steps,
            db.max_warmup_steps,
            config.skip_interval,
            usize::try_from(db.max_continuous_cached_steps).unwrap_or(0),
        )),
        Strategy::Adaptive | Strategy::DbPrune => {
            Rules::DbCache(DbRules::new(db, rules_mask(db, steps)?))
        }
        // Measured (or scheduled by timestep) on every call after the first.
        Strategy::FirstBlock
        | Strategy::TeaCache
        | Strategy::MagCache
        | Strategy::Pab
        | Strategy::FasterCache
        | Strategy::EasyCache
        | Strategy::FastCache => Rules::DbCache(DbRules::new(
            &super::fbcache::as_db_rules(config.db.residual_diff_threshold),
            None,
        )),
    })
}

/// One step of a preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Planned {
    Compute(Reason),
    Reuse(Reason),
    /// Decided during the run by the residual indicator (and the limits that depend on it).
    Indicator,
}

/// Why a schedule is not worth running as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Degenerate {
    /// No step can reuse: the cache only costs.
    NeverReuses,
    /// Once reuse starts it never computes again: the image is frozen from there on.
    AlwaysReuses,
}

impl Degenerate {
    pub fn describe(self) -> &'static str {
        match self {
            Degenerate::NeverReuses => "never reuses: the cache only adds overhead",
            Degenerate::AlwaysReuses => "reuses every step after warmup: the image freezes",
        }
    }
}

/// What a run of a given length will do, per step (the same for every CFG branch).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulePreview {
    pub steps: Vec<Planned>,
    pub computes: usize,
    pub reuses: usize,
    /// Steps the indicator decides at run time.
    pub undecided: usize,
    pub degenerate: Option<Degenerate>,
}

/// Which steps a config will compute in a run of `steps` steps, before running it. Counter
/// strategies and static masks are fully known; DBCache's indicator steps are `Indicator`
/// (thresholds ≤ 0 or ≥ 1 need no tensor, so those runs are fully known too).
pub fn schedule_preview(
    config: &StepCacheConfig,
    steps: usize,
) -> Result<SchedulePreview, CacheConfigError> {
    Ok(preview_rules(&rules_for_run(config, steps)?, steps))
}

/// [`schedule_preview`] of rules already built for the run.
pub fn preview_rules(rules: &Rules, steps: usize) -> SchedulePreview {
    let mut policy = BranchPolicy::default();
    let mut has_reference = false;
    // Once the indicator decides a step, later limit rules depend on unknown outcomes.
    let mut known = true;
    struct Unknown;
    let plan: Vec<Planned> = (0..steps)
        .map(|s| {
            let verdict =
                policy.decide(rules, s, has_reference, |thr| sentinel(thr).ok_or(Unknown));
            let planned = match verdict {
                Err(Unknown) => {
                    known = false;
                    Planned::Indicator
                }
                Ok(v) if !known && !is_certain(v.reason) => Planned::Indicator,
                Ok(v) => match v.decision {
                    Decision::Computed => Planned::Compute(v.reason),
                    Decision::Reused => Planned::Reuse(v.reason),
                },
            };
            has_reference |= matches!(planned, Planned::Compute(_) | Planned::Indicator);
            planned
        })
        .collect();
    let count = |f: fn(&Planned) -> bool| plan.iter().filter(|p| f(p)).count();
    let computes = count(|p| matches!(p, Planned::Compute(_)));
    let reuses = count(|p| matches!(p, Planned::Reuse(_)));
    let undecided = count(|p| matches!(p, Planned::Indicator));
    // Frozen: once the first reuse happens, nothing computes again.
    let frozen = plan
        .iter()
        .position(|p| matches!(p, Planned::Reuse(_)))
        .is_some_and(|first| {
            plan.iter()
                .skip(first)
                .all(|p| matches!(p, Planned::Reuse(_)))
        });
    let degenerate = if reuses + undecided == 0 {
        Some(Degenerate::NeverReuses)
    } else if undecided == 0 && frozen {
        Some(Degenerate::AlwaysReuses)
    } else {
        None
    };
    SchedulePreview {
        steps: plan,
        computes,
        reuses,
        undecided,
        degenerate,
    }
}

/// Rules that depend only on the step index (not on earlier outcomes).
fn is_certain(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Warmup | Reason::ScheduleCompute | Reason::ScheduleReuse | Reason::LastStep
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::config::{MaskPolicy, StepsMask};
    use crate::cache::scm::ScmPreset;

    fn pattern(plan: &[Planned]) -> String {
        plan.iter()
            .map(|p| match p {
                Planned::Compute(_) => 'C',
                Planned::Reuse(_) => 'r',
                Planned::Indicator => '?',
            })
            .collect()
    }

    fn config(strategy: Strategy, warmup: usize, k: usize) -> StepCacheConfig {
        let mut c = StepCacheConfig::studio_default();
        c.strategy = strategy;
        c.db.max_warmup_steps = warmup;
        c.skip_interval = k;
        c
    }

    #[test]
    fn fixed_reuses_one_in_k_after_warmup() {
        let p = schedule_preview(&config(Strategy::Fixed, 3, 2), 10).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCrCrCrC");
        assert_eq!((p.computes, p.reuses, p.degenerate), (7, 3, None));
        let p = schedule_preview(&config(Strategy::Fixed, 2, 3), 10).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCrCCrCC");
    }

    #[test]
    fn degenerate_schedules_are_flagged() {
        let every = schedule_preview(&config(Strategy::Fixed, 2, 1), 8).expect("preview");
        assert_eq!(pattern(&every.steps), "CCrrrrrr");
        assert_eq!(every.degenerate, Some(Degenerate::AlwaysReuses));
        let no_warmup = schedule_preview(&config(Strategy::Fixed, 0, 1), 4).expect("preview");
        assert_eq!(
            pattern(&no_warmup.steps),
            "Crrr",
            "step 0 has nothing to reuse"
        );
        assert_eq!(no_warmup.degenerate, Some(Degenerate::AlwaysReuses));
        let long_warmup = schedule_preview(&config(Strategy::Fixed, 20, 2), 10).expect("p");
        assert_eq!(long_warmup.degenerate, Some(Degenerate::NeverReuses));
        let mut never = config(Strategy::Dynamic, 2, 2);
        never.db.max_continuous_cached_steps = 0;
        let p = schedule_preview(&never, 10).expect("preview");
        assert_eq!(p.degenerate, Some(Degenerate::NeverReuses));
        let mut off = StepCacheConfig::studio_default();
        off.db.residual_diff_threshold = 0.0;
        let p = schedule_preview(&off, 10).expect("preview");
        assert_eq!(p.degenerate, Some(Degenerate::NeverReuses));
        assert_eq!(p.steps[6], Planned::Compute(Reason::ThresholdOff));
    }

    #[test]
    fn dynamic_reuses_more_later_with_bounded_runs_and_a_computed_last_step() {
        for (steps, warmup, k, max_run) in [(25, 4, 2, 3), (50, 4, 3, 2), (30, 0, 2, 4)] {
            let plan = dynamic_plan(steps, warmup, k, max_run);
            assert_eq!(plan.last(), Some(&Plan::Compute(Reason::LastStep)));
            let reuse: Vec<bool> = plan.iter().map(|p| matches!(p, Plan::Reuse(_))).collect();
            let longest = reuse.split(|r| !r).map(|run| run.len()).max().unwrap_or(0);
            assert!(longest <= max_run, "{steps}/{max_run}: run of {longest}");
            let body = &reuse[warmup..steps - 1];
            let (early, late) = body.split_at(body.len() / 2);
            let share = |x: &[bool]| x.iter().filter(|&&r| r).count() as f64 / x.len() as f64;
            assert!(share(late) > share(early), "{steps}: {reuse:?}");
        }
        let p = schedule_preview(&config(Strategy::Dynamic, 4, 2), 25).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCCrCrCrCrCrrCrrCrrCrrC");
        assert_eq!(p.degenerate, None);
    }

    #[test]
    fn adaptive_previews_forced_steps_and_leaves_the_rest_to_the_indicator() {
        let p = schedule_preview(&StepCacheConfig::studio_default(), 8).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCC????");
        assert_eq!((p.computes, p.undecided, p.degenerate), (4, 4, None));
        // Threshold ≥ 1 needs no tensor: the limits play out exactly (MC3 → every 4th).
        let mut always = StepCacheConfig::studio_default();
        always.db.residual_diff_threshold = 1.0;
        let p = schedule_preview(&always, 12).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCrrrCrrrC");
        assert_eq!(p.steps[7], Planned::Compute(Reason::MaxContinuous));
    }

    #[test]
    fn scm_masks_preview_static_exactly_and_dynamic_as_indicator() {
        let mut c = StepCacheConfig::studio_default();
        c.db.max_warmup_steps = 8;
        c.db.steps_mask = Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::Medium),
            policy: MaskPolicy::Static,
        });
        let p = schedule_preview(&c, 28).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCCCrCCrrrCCrrrCCrrrCCrrrC");
        assert_eq!(p.steps[7], Planned::Compute(Reason::ScheduleCompute));
        assert_eq!(
            p.steps[5],
            Planned::Compute(Reason::Warmup),
            "W truncated to 6"
        );
        c.db.steps_mask = Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::Medium),
            policy: MaskPolicy::Dynamic,
        });
        let p = schedule_preview(&c, 28).expect("preview");
        assert_eq!(pattern(&p.steps), "CCCCCC?CC???CC???CC???CC???C");
        c.db.steps_mask = Some(StepsMask {
            source: MaskSource::Custom(vec![false, true, false]),
            policy: MaskPolicy::Static,
        });
        let p = schedule_preview(&c, 5).expect("preview");
        assert_eq!(pattern(&p.steps), "CCrrr", "nothing to reuse at step 0");
        assert_eq!(p.steps[0], Planned::Compute(Reason::NoReference));
        assert_eq!(p.degenerate, Some(Degenerate::AlwaysReuses));
        c.db.steps_mask = Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::Fast),
            policy: MaskPolicy::Static,
        });
        assert_eq!(
            schedule_preview(&c, 5).err().map(|e| e.field),
            Some("scm_policy")
        );
    }
}
