//! CacheDit Advanced Config: the step-cache settings a Sampler's `cache` input takes. The
//! artist fields of the ComfyUI plugin (strategy, skip_interval, warmup, noise_scale) made
//! real, plus every cache-dit knob as an advanced (collapsed) field.

use crate::cache::config::MagCacheParams;
use crate::cache::scm::{parse_mask, ScmPreset};
use crate::cache::{
    MaskPolicy, MaskSource, StepCacheConfig, StepsMask, Strategy, TaylorIndexing, TaylorSeerConfig,
};
use crate::exec::context::NodeContext;
use crate::exec::data::Data;
use crate::registry::{
    Inputs, KindSpec, NodeError, NodeKind, Outputs, ParamSpec, Params, PortSpec, PortType,
};
use std::sync::Arc;

pub struct CacheDitConfig;

/// The strategies of the step cache (fbcache has only its threshold).
const NOT_FBCACHE: &[&str] = &["fixed", "dynamic", "adaptive"];
const SCM_POLICIES: &[&str] = &["none", "slow", "medium", "fast", "ultra", "custom"];
/// Every SCM policy but `none`: where the mask settings apply.
const SCM_PRESET_OR_CUSTOM: &[&str] = &["slow", "medium", "fast", "ultra", "custom"];

fn choice<T>(params: &Params, name: &str, parse: fn(&str) -> Option<T>) -> Result<T, NodeError> {
    let text = params.text(name)?;
    parse(text).ok_or_else(|| NodeError::Param(name.into(), format!("unknown option {text:?}")))
}

fn count(params: &Params, name: &str) -> Result<usize, NodeError> {
    let v = params.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::Param(name.into(), format!("{v} is below 0")))
}

/// `mag_ratios` as numbers; the error names the param and the item.
fn parse_ratios(text: &str) -> Result<Vec<f64>, NodeError> {
    text.split(',')
        .map(|item| {
            let item = item
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim();
            item.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    NodeError::Param("mag_ratios".into(), format!("{item:?} is not a number"))
                })
        })
        .collect()
}

/// The config a node with these (resolved) params describes, checked.
pub fn config_from_params(params: &Params) -> Result<StepCacheConfig, NodeError> {
    let mut c = StepCacheConfig::studio_default();
    c.strategy = choice(params, "strategy", Strategy::parse)?;
    c.skip_interval = count(params, "skip_interval")?;
    c.db.max_warmup_steps = count(params, "warmup")?;
    c.noise_scale = params.float("noise_scale")?;
    c.noise_seed = params.int("noise_seed")? as u64;
    c.db.fn_compute_blocks = count(params, "Fn_compute_blocks")?;
    c.db.bn_compute_blocks = count(params, "Bn_compute_blocks")?;
    c.db.residual_diff_threshold = params.float("residual_diff_threshold")?;
    c.db.warmup_interval = count(params, "warmup_interval")?;
    c.db.max_cached_steps = params.int("max_cached_steps")?;
    c.db.max_continuous_cached_steps = params.int("max_continuous_cached_steps")?;
    let acc = params.float("max_accumulated_residual_diff_threshold")?;
    c.db.max_accumulated_residual_diff_threshold = (acc > 0.0).then_some(acc);
    c.db.cfg_diff_compute_separate = params.boolean("cfg_diff_compute_separate")?;
    c.taylorseer = if params.boolean("taylorseer")? {
        Some(TaylorSeerConfig {
            order: count(params, "taylorseer_order")?,
            indexing: choice(params, "taylorseer_indexing", TaylorIndexing::parse)?,
        })
    } else {
        None
    };
    let policy = choice(params, "scm_mode", MaskPolicy::parse)?;
    c.db.steps_mask = match params.text("scm_policy")? {
        "none" => None,
        "custom" => Some(StepsMask {
            source: MaskSource::Custom(parse_mask(params.text("scm_mask")?)?),
            policy,
        }),
        other => Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::parse(other).ok_or_else(|| {
                NodeError::Param("scm_policy".into(), format!("unknown option {other:?}"))
            })?),
            policy,
        }),
    };
    // Their threshold is all they read; the hidden knobs must not leak into them.
    match c.strategy {
        Strategy::FirstBlock => c = StepCacheConfig::first_block(c.db.residual_diff_threshold),
        Strategy::TeaCache => c = StepCacheConfig::tea_cache(c.db.residual_diff_threshold),
        Strategy::MagCache => {
            let ratios = params.text("mag_ratios")?.trim();
            let params = MagCacheParams {
                max_skip_steps: count(params, "max_skip_steps")?,
                retention_ratio: params.float("retention_ratio")?,
                mag_ratios: if ratios.is_empty() {
                    None
                } else {
                    Some(parse_ratios(ratios)?)
                },
                calibrate: params.boolean("calibrate")?,
            };
            c = StepCacheConfig::mag_cache(c.db.residual_diff_threshold, params);
        }
        _ => {}
    }
    c.validate()?;
    Ok(c)
}

impl NodeKind for CacheDitConfig {
    fn spec(&self) -> KindSpec {
        let d = StepCacheConfig::studio_default();
        let db = &d.db;
        KindSpec {
            name: "CacheDitAdvancedConfig",
            title: "CacheDit Advanced Config",
            category: "step cache",
            help: "Step-cache settings for a Sampler: reuse the middle blocks' residual on some \
                   steps. fixed and dynamic follow a schedule by step index; adaptive is \
                   cache-dit's DBCache (the front blocks' residual decides), optionally with \
                   TaylorSeer and an SCM mask.",
            inputs: vec![],
            outputs: vec![PortSpec::output(
                "cache",
                PortType::CacheConfig,
                "step-cache settings for a Sampler's `cache` input",
            )],
            params: vec![
                ParamSpec::choice(
                    "strategy",
                    d.strategy.name(),
                    Strategy::NAMES,
                    "fixed: after warmup reuse one step in skip_interval; dynamic: reuse more \
                     often later on, in bounded runs, the last step computes; adaptive: \
                     cache-dit's DBCache residual indicator; fbcache: diffusers' First Block \
                     Cache (the first block's residual, residual_diff_threshold only); \
                     teacache: TeaCache (block 0's modulated input, accumulated; threshold \
                     only)",
                ),
                ParamSpec::int(
                    "skip_interval",
                    d.skip_interval as i64,
                    1,
                    100,
                    "fixed: one step in this many is reused; dynamic: the period it starts with",
                )
                .when("strategy", &["fixed", "dynamic"]),
                ParamSpec::int(
                    "warmup",
                    db.max_warmup_steps as i64,
                    0,
                    1000,
                    "first steps that always compute (DBCache's max_warmup_steps)",
                )
                .when("strategy", NOT_FBCACHE),
                ParamSpec::float(
                    "noise_scale",
                    d.noise_scale,
                    0.0,
                    0.1,
                    "noise added to a reused residual, relative to its mean |value|; 0 = exact \
                     reuse",
                )
                .when("strategy", NOT_FBCACHE),
                ParamSpec::boolean(
                    "taylorseer",
                    d.taylorseer.is_some(),
                    "forecast the reused residual from the computed steps (TaylorSeer) instead \
                     of reusing it stale",
                )
                .when("strategy", NOT_FBCACHE),
                ParamSpec::int(
                    "Fn_compute_blocks",
                    db.fn_compute_blocks as i64,
                    0,
                    1024,
                    "front blocks that always run; their residual is the adaptive indicator \
                     (at least 1 for adaptive)",
                )
                .advanced()
                .when("strategy", NOT_FBCACHE),
                ParamSpec::int(
                    "Bn_compute_blocks",
                    db.bn_compute_blocks as i64,
                    0,
                    1024,
                    "back blocks that always run after the reused middle",
                )
                .advanced()
                .when("strategy", NOT_FBCACHE),
                ParamSpec::float(
                    "residual_diff_threshold",
                    db.residual_diff_threshold,
                    0.0,
                    1.0,
                    "adaptive: reuse when the relative L1 diff is below this, 0 never, 1 always; \
                     fbcache: compute when the first block's diff is above this; teacache: \
                     reuse while the accumulated rescaled distance stays below this",
                )
                .advanced()
                .when("strategy", &["adaptive", "fbcache", "teacache", "magcache"]),
                ParamSpec::int(
                    "max_skip_steps",
                    3,
                    0,
                    1000,
                    "magcache: at most this many skipped steps in a row",
                )
                .when("strategy", &["magcache"]),
                ParamSpec::float(
                    "retention_ratio",
                    0.2,
                    0.0,
                    1.0,
                    "magcache: this share of the first steps always computes",
                )
                .when("strategy", &["magcache"]),
                ParamSpec::text(
                    "mag_ratios",
                    "",
                    "magcache: the per-step magnitude ratios, comma-separated (resampled to the \
                     step count); empty = the model's own (FLUX.1 has diffusers'); `calibrate` \
                     records them for a model",
                )
                .when("strategy", &["magcache"]),
                ParamSpec::boolean(
                    "calibrate",
                    false,
                    "magcache: compute every step and record its ratio (the timeline's diff) \
                     to paste into mag_ratios",
                )
                .when("strategy", &["magcache"]),
                ParamSpec::int(
                    "warmup_interval",
                    db.warmup_interval as i64,
                    1,
                    1000,
                    "adaptive: inside warmup only every this-many-th step is forced to compute",
                )
                .advanced()
                .when("strategy", &["adaptive"]),
                ParamSpec::int(
                    "max_cached_steps",
                    db.max_cached_steps,
                    -1,
                    100_000,
                    "adaptive: cached steps allowed per branch; -1 unlimited, 0 never",
                )
                .advanced()
                .when("strategy", &["adaptive"]),
                ParamSpec::int(
                    "max_continuous_cached_steps",
                    db.max_continuous_cached_steps,
                    -1,
                    100_000,
                    "adaptive: cache-dit's limit on consecutive cached steps (-1 unlimited); \
                     dynamic: the longest run of reuses",
                )
                .advanced()
                .when("strategy", &["adaptive", "dynamic"]),
                ParamSpec::float(
                    "max_accumulated_residual_diff_threshold",
                    db.max_accumulated_residual_diff_threshold.unwrap_or(0.0),
                    0.0,
                    1000.0,
                    "adaptive: stop reusing once the summed diffs reach this; 0 = off",
                )
                .advanced()
                .when("strategy", &["adaptive"]),
                ParamSpec::boolean(
                    "cfg_diff_compute_separate",
                    db.cfg_diff_compute_separate,
                    "separate CFG: the unconditional call measures its own diff (else it takes \
                     the conditional call's)",
                )
                .advanced()
                .when("strategy", &["adaptive"]),
                ParamSpec::int(
                    "taylorseer_order",
                    1,
                    1,
                    4,
                    "TaylorSeer: number of derivatives",
                )
                .advanced()
                .when("taylorseer", &["true"]),
                ParamSpec::choice(
                    "taylorseer_indexing",
                    TaylorIndexing::CacheDit.name(),
                    TaylorIndexing::NAMES,
                    "cache-dit: derivatives from step 3 on, as cache-dit computes them; \
                     intended: from the second computed step",
                )
                .advanced()
                .when("taylorseer", &["true"]),
                ParamSpec::choice(
                    "scm_policy",
                    "none",
                    SCM_POLICIES,
                    "adaptive: steps-computation mask (cache-dit SCM) for the run's step \
                     count, or `custom` (scm_mask)",
                )
                .advanced()
                .when("strategy", &["adaptive"]),
                ParamSpec::choice(
                    "scm_mode",
                    MaskPolicy::Dynamic.name(),
                    MaskPolicy::NAMES,
                    "what mask-0 steps do: dynamic = the indicator decides; static = always \
                     reuse (blurs)",
                )
                .advanced()
                .when("strategy", &["adaptive"])
                .when("scm_policy", SCM_PRESET_OR_CUSTOM),
                ParamSpec::text(
                    "scm_mask",
                    "",
                    "custom mask, one digit per step: 1 compute, 0 cache (e.g. 1111011101)",
                )
                .advanced()
                .when("strategy", &["adaptive"])
                .when("scm_policy", &["custom"]),
                ParamSpec::int(
                    "noise_seed",
                    d.noise_seed as i64,
                    0,
                    u32::MAX as i64,
                    "seed of the reuse noise",
                )
                .advanced(),
            ],
        }
    }

    fn run(
        &self,
        _ctx: &NodeContext,
        _inputs: &Inputs,
        params: &Params,
    ) -> Result<Outputs, NodeError> {
        let config = config_from_params(params)?;
        Ok(Outputs::from([(
            "cache".to_string(),
            Data::CacheConfig(Arc::new(config)),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Value;

    fn params(overrides: &[(&str, Value)]) -> Params {
        let spec = CacheDitConfig.spec();
        let mut p = Params::default();
        for s in &spec.params {
            p.0.insert(s.name.to_string(), s.default.clone());
        }
        for (k, v) in overrides {
            p.0.insert(k.to_string(), v.clone());
        }
        p
    }

    #[test]
    fn defaults_give_the_studio_config_and_expert_fields_are_marked() {
        let c = config_from_params(&params(&[])).expect("config");
        assert_eq!(c, StepCacheConfig::studio_default());
        let spec = CacheDitConfig.spec();
        let basic: Vec<&str> = spec
            .params
            .iter()
            .filter(|p| !p.advanced)
            .map(|p| p.name)
            .collect();
        assert_eq!(
            basic,
            [
                "strategy",
                "skip_interval",
                "warmup",
                "noise_scale",
                "taylorseer",
                // Shown only under magcache, whose own settings they are.
                "max_skip_steps",
                "retention_ratio",
                "mag_ratios",
                "calibrate"
            ]
        );
        assert_eq!(spec.outputs[0].ty, PortType::CacheConfig);
    }

    #[test]
    fn params_map_onto_the_config_and_errors_name_the_field() {
        let c = config_from_params(&params(&[
            ("strategy", Value::Text("fixed".into())),
            ("skip_interval", Value::Int(3)),
            ("taylorseer", Value::Bool(true)),
            ("taylorseer_order", Value::Int(2)),
            ("max_accumulated_residual_diff_threshold", Value::Float(0.5)),
        ]))
        .expect("config");
        assert_eq!((c.strategy, c.skip_interval), (Strategy::Fixed, 3));
        assert_eq!(c.taylorseer.map(|t| t.order), Some(2));
        assert_eq!(c.db.max_accumulated_residual_diff_threshold, Some(0.5));
        let scm = config_from_params(&params(&[
            ("scm_policy", Value::Text("custom".into())),
            ("scm_mask", Value::Text("1101".into())),
            ("scm_mode", Value::Text("static".into())),
        ]))
        .expect("config");
        assert_eq!(
            scm.db.steps_mask,
            Some(StepsMask {
                source: MaskSource::Custom(vec![true, true, false, true]),
                policy: MaskPolicy::Static
            })
        );
        let err = config_from_params(&params(&[
            ("scm_policy", Value::Text("custom".into())),
            ("scm_mask", Value::Text("12".into())),
        ]))
        .expect_err("bad mask");
        assert!(err.to_string().contains("scm_mask"), "{err}");
        let err = config_from_params(&params(&[("Fn_compute_blocks", Value::Int(0))]))
            .expect_err("adaptive needs Fn ≥ 1");
        assert!(err.to_string().contains("Fn_compute_blocks"), "{err}");
    }
}
