//! CacheDit Advanced Config: the step-cache settings a Sampler's `cache` input takes. The
//! artist fields of the ComfyUI plugin (strategy, skip_interval, warmup, noise_scale) made
//! real, plus every cache-dit knob as an advanced (collapsed) field.

use crate::cache::config::MagCacheParams;
use crate::cache::dbprune::DbPruneParams;
use crate::cache::easycache::EasyCacheParams;
use crate::cache::fastcache::{FastCacheParams, LinearMap};
use crate::cache::fastercache::FasterCacheParams;
use crate::cache::pab::PabParams;
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
/// cache-dit's methods: DBCache (adaptive) and DBPrune share the block partition, the limits
/// and SCM.
const CACHE_DIT: &[&str] = &["adaptive", "dbprune"];
/// The methods whose blocks split into always-run front and back blocks.
const PARTITIONED: &[&str] = &["fixed", "dynamic", "adaptive", "dbprune"];
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

/// A comma-separated list of numbers (brackets allowed); the error names `param` and the item.
fn parse_numbers(text: &str, param: &str) -> Result<Vec<f64>, NodeError> {
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
                .ok_or_else(|| NodeError::Param(param.into(), format!("{item:?} is not a number")))
        })
        .collect()
}

/// A `low, high` timestep window; `None` when the text is empty (the method's default).
fn window(params: &Params, name: &str) -> Result<Option<(f64, f64)>, NodeError> {
    let text = params.text(name)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || {
        NodeError::Param(
            name.into(),
            format!("{text:?} is not a window `low, high` (two numbers, low below high)"),
        )
    };
    let values: Vec<f64> = text
        .trim_start_matches(['(', '['])
        .trim_end_matches([')', ']'])
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match values.as_slice() {
        [lo, hi] if lo.is_finite() && hi.is_finite() && lo < hi => Ok(Some((*lo, *hi))),
        _ => Err(bad()),
    }
}

/// Comma-separated block indices (`non_prune_block_ids`).
fn block_ids(text: &str) -> Result<Vec<usize>, NodeError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<usize>().map_err(|_| {
                NodeError::Param(
                    "non_prune_block_ids".into(),
                    format!("{t:?} is not a block index (0 or more)"),
                )
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
        Strategy::TeaCache => {
            let text = params.text("coefficients")?.trim();
            c = StepCacheConfig {
                teacache_coefficients: if text.is_empty() {
                    None
                } else {
                    Some(parse_numbers(text, "coefficients")?)
                },
                ..StepCacheConfig::tea_cache(c.db.residual_diff_threshold)
            };
        }
        Strategy::MagCache => {
            let ratios = params.text("mag_ratios")?.trim();
            let params = MagCacheParams {
                max_skip_steps: count(params, "max_skip_steps")?,
                retention_ratio: params.float("retention_ratio")?,
                mag_ratios: if ratios.is_empty() {
                    None
                } else {
                    Some(parse_numbers(ratios, "mag_ratios")?)
                },
                calibrate: params.boolean("calibrate")?,
            };
            c = StepCacheConfig::mag_cache(c.db.residual_diff_threshold, params);
        }
        Strategy::Pab => {
            let mut pab = PabParams {
                block_skip_range: count(params, "spatial_attention_block_skip_range")?,
                ..PabParams::default()
            };
            if let Some(w) = window(params, "spatial_attention_timestep_skip_range")? {
                pab.timestep_skip_range = w;
            }
            c = StepCacheConfig {
                pab,
                ..StepCacheConfig::threshold_free(Strategy::Pab)
            };
        }
        Strategy::FasterCache => {
            let d = FasterCacheParams::default();
            let or = |name: &str, default: (f64, f64)| -> Result<(f64, f64), NodeError> {
                Ok(window(params, name)?.unwrap_or(default))
            };
            let fc = FasterCacheParams {
                spatial_attention_block_skip_range: count(
                    params,
                    "spatial_attention_block_skip_range",
                )?,
                spatial_attention_timestep_skip_range: or(
                    "spatial_attention_timestep_skip_range",
                    d.spatial_attention_timestep_skip_range,
                )?,
                low_frequency_weight_update_timestep_range: or(
                    "low_frequency_weight_update_timestep_range",
                    d.low_frequency_weight_update_timestep_range,
                )?,
                high_frequency_weight_update_timestep_range: or(
                    "high_frequency_weight_update_timestep_range",
                    d.high_frequency_weight_update_timestep_range,
                )?,
                alpha_low_frequency: params.float("alpha_low_frequency")?,
                alpha_high_frequency: params.float("alpha_high_frequency")?,
                unconditional_batch_skip_range: count(params, "unconditional_batch_skip_range")?,
                unconditional_batch_timestep_skip_range: or(
                    "unconditional_batch_timestep_skip_range",
                    d.unconditional_batch_timestep_skip_range,
                )?,
                attention_weight: params.float("attention_weight")?,
            };
            c = StepCacheConfig {
                fastercache: fc,
                ..StepCacheConfig::threshold_free(Strategy::FasterCache)
            };
        }
        Strategy::DbPrune => {
            let max = params.float("max_dynamic_prune_threshold")?;
            c.dbprune = DbPruneParams {
                non_prune_block_ids: block_ids(params.text("non_prune_block_ids")?)?,
                enable_dynamic_prune_threshold: params.boolean("enable_dynamic_prune_threshold")?,
                max_dynamic_prune_threshold: (max > 0.0).then_some(max),
                dynamic_prune_threshold_relax_ratio: params
                    .float("dynamic_prune_threshold_relax_ratio")?,
            };
            // A pruned block adds its stored residual as is.
            c.taylorseer = None;
            c.noise_scale = 0.0;
        }
        Strategy::EasyCache => {
            c = StepCacheConfig {
                easycache: EasyCacheParams {
                    reuse_threshold: params.float("reuse_threshold")?,
                    start_percent: params.float("start_percent")?,
                    end_percent: params.float("end_percent")?,
                    subsample_factor: count(params, "subsample_factor")?,
                },
                ..StepCacheConfig::threshold_free(Strategy::EasyCache)
            };
        }
        Strategy::FastCache => {
            c = StepCacheConfig {
                fastcache: FastCacheParams {
                    cache_ratio_threshold: params.float("cache_ratio_threshold")?,
                    motion_threshold: params.float("motion_threshold")?,
                    linear_map: choice(params, "linear_map", LinearMap::parse)?,
                },
                ..StepCacheConfig::threshold_free(Strategy::FastCache)
            };
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
                     only); magcache: MagCache (calibrated magnitude ratios); pab: Pyramid \
                     Attention Broadcast (attention reused inside a timestep window); \
                     fastercache: FasterCache (uncond half from the frequency domain, attention \
                     extrapolated); dbprune: cache-dit's DBPrune (each middle block on its own \
                     diff); easycache: ComfyUI's EasyCache (the whole model, predicted change); \
                     fastcache: FastCache (static tokens bypass, per-block linear maps)",
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
                .when("strategy", PARTITIONED),
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
                     (at least 1 for adaptive and dbprune)",
                )
                .advanced()
                .when("strategy", PARTITIONED),
                ParamSpec::int(
                    "Bn_compute_blocks",
                    db.bn_compute_blocks as i64,
                    0,
                    1024,
                    "back blocks that always run after the reused middle",
                )
                .advanced()
                .when("strategy", PARTITIONED),
                ParamSpec::float(
                    "residual_diff_threshold",
                    db.residual_diff_threshold,
                    0.0,
                    1.0,
                    "adaptive: reuse when the relative L1 diff is below this, 0 never, 1 always; \
                     fbcache: compute when the first block's diff is above this; teacache: \
                     reuse while the accumulated rescaled distance stays below this; magcache: \
                     the accumulated error's bound; dbprune: prune a block when its input's \
                     diff is below this (1 always)",
                )
                .advanced()
                .when(
                    "strategy",
                    &["adaptive", "fbcache", "teacache", "magcache", "dbprune"],
                ),
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
                ParamSpec::text(
                    "coefficients",
                    "",
                    "teacache: the rescale polynomial, highest power first, comma-separated; \
                     empty = the model family's (FLUX.1: TeaCache4FLUX's; none published for \
                     DiT: identity); `cachedit calibrate-teacache` fits one for a model",
                )
                .advanced()
                .when("strategy", &["teacache"]),
                ParamSpec::int(
                    "spatial_attention_block_skip_range",
                    2,
                    0,
                    100,
                    "pab: attention computes every N-th call and is reused in between (1 never \
                     reuses); fastercache: attention computes on multiples of N and is \
                     extrapolated between (0 = off)",
                )
                .when("strategy", &["pab", "fastercache"]),
                ParamSpec::text(
                    "spatial_attention_timestep_skip_range",
                    "",
                    "pab, fastercache: reuse only while low < t < high (scheduler timesteps, \
                     ~1000 → 0), as `low, high`; empty = the method's default (pab 100, 800; \
                     fastercache -1, 681)",
                )
                .when("strategy", &["pab", "fastercache"]),
                ParamSpec::int(
                    "unconditional_batch_skip_range",
                    5,
                    0,
                    100,
                    "fastercache: the unconditional half runs on multiples of N and is rebuilt \
                     from the conditional one between (0 = always runs)",
                )
                .when("strategy", &["fastercache"]),
                ParamSpec::text(
                    "unconditional_batch_timestep_skip_range",
                    "",
                    "fastercache: where the unconditional half may be skipped, `low, high`; \
                     empty = -1, 641",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::float(
                    "attention_weight",
                    0.5,
                    -10.0,
                    10.0,
                    "fastercache: w in y₁ + (y₁ − y₂)·w, the attention extrapolation",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::float(
                    "alpha_low_frequency",
                    1.1,
                    0.0,
                    10.0,
                    "fastercache: weight of the low-frequency difference per skipped call \
                     (compounds) inside its window",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::float(
                    "alpha_high_frequency",
                    1.1,
                    0.0,
                    10.0,
                    "fastercache: the same for the high frequencies",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::text(
                    "low_frequency_weight_update_timestep_range",
                    "",
                    "fastercache: where alpha_low_frequency applies, `low, high`; empty = 99, 901",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::text(
                    "high_frequency_weight_update_timestep_range",
                    "",
                    "fastercache: where alpha_high_frequency applies, `low, high`; empty = -1, \
                     301",
                )
                .advanced()
                .when("strategy", &["fastercache"]),
                ParamSpec::boolean(
                    "enable_dynamic_prune_threshold",
                    false,
                    "dbprune: relax the threshold to 1.25 × the mean of the step's first five \
                     diffs (below max_dynamic_prune_threshold)",
                )
                .when("strategy", &["dbprune"]),
                ParamSpec::text(
                    "non_prune_block_ids",
                    "",
                    "dbprune: blocks (run-order indices, comma-separated) never pruned",
                )
                .advanced()
                .when("strategy", &["dbprune"]),
                ParamSpec::float(
                    "max_dynamic_prune_threshold",
                    0.0,
                    0.0,
                    10.0,
                    "dbprune: the relaxed threshold stays below this; 0 = twice the threshold",
                )
                .advanced()
                .when("strategy", &["dbprune"])
                .when("enable_dynamic_prune_threshold", &["true"]),
                ParamSpec::float(
                    "dynamic_prune_threshold_relax_ratio",
                    1.25,
                    0.0,
                    10.0,
                    "dbprune: the multiplier on the mean diff",
                )
                .advanced()
                .when("strategy", &["dbprune"])
                .when("enable_dynamic_prune_threshold", &["true"]),
                ParamSpec::float(
                    "reuse_threshold",
                    0.2,
                    0.0,
                    3.0,
                    "easycache: skip the model while the summed predicted change stays below \
                     this",
                )
                .when("strategy", &["easycache"]),
                ParamSpec::float(
                    "start_percent",
                    0.15,
                    0.0,
                    1.0,
                    "easycache: the share of the run where skipping may start",
                )
                .when("strategy", &["easycache"]),
                ParamSpec::float(
                    "end_percent",
                    0.95,
                    0.0,
                    1.0,
                    "easycache: the share of the run after which every call computes",
                )
                .when("strategy", &["easycache"]),
                ParamSpec::int(
                    "subsample_factor",
                    8,
                    1,
                    64,
                    "easycache: every n-th row and column enter the change measures (ComfyUI \
                     fixes 8)",
                )
                .advanced()
                .when("strategy", &["easycache"]),
                ParamSpec::float(
                    "cache_ratio_threshold",
                    0.05,
                    0.0,
                    1.0,
                    "fastcache: approximate a block while its input's relative change stays \
                     within this (the floor of the combined threshold)",
                )
                .when("strategy", &["fastcache"]),
                ParamSpec::float(
                    "motion_threshold",
                    0.1,
                    0.0,
                    1.0,
                    "fastcache: tokens whose normalised change is above this run the blocks; \
                     the rest bypass the stack",
                )
                .when("strategy", &["fastcache"]),
                ParamSpec::choice(
                    "linear_map",
                    LinearMap::Residual.name(),
                    LinearMap::NAMES,
                    "fastcache: residual = an approximated block (or a static token) adds its \
                     last computed residual; identity = it passes its input through (the \
                     paper's training-free map)",
                )
                .when("strategy", &["fastcache"]),
                ParamSpec::int(
                    "warmup_interval",
                    db.warmup_interval as i64,
                    1,
                    1000,
                    "adaptive, dbprune: inside warmup only every this-many-th step is forced \
                     to compute",
                )
                .advanced()
                .when("strategy", CACHE_DIT),
                ParamSpec::int(
                    "max_cached_steps",
                    db.max_cached_steps,
                    -1,
                    100_000,
                    "adaptive, dbprune: cached steps allowed per branch; -1 unlimited, 0 never",
                )
                .advanced()
                .when("strategy", CACHE_DIT),
                ParamSpec::int(
                    "max_continuous_cached_steps",
                    db.max_continuous_cached_steps,
                    -1,
                    100_000,
                    "adaptive: cache-dit's limit on consecutive cached steps (-1 unlimited); \
                     dynamic: the longest run of reuses",
                )
                .advanced()
                .when("strategy", &["adaptive", "dynamic", "dbprune"]),
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
                    "adaptive, dbprune: steps-computation mask (cache-dit SCM) for the run's \
                     step count, or `custom` (scm_mask)",
                )
                .advanced()
                .when("strategy", CACHE_DIT),
                ParamSpec::choice(
                    "scm_mode",
                    MaskPolicy::Dynamic.name(),
                    MaskPolicy::NAMES,
                    "what mask-0 steps do: dynamic = the indicator decides; static = always \
                     reuse (blurs)",
                )
                .advanced()
                .when("strategy", CACHE_DIT)
                .when("scm_policy", SCM_PRESET_OR_CUSTOM),
                ParamSpec::text(
                    "scm_mask",
                    "",
                    "custom mask, one digit per step: 1 compute, 0 cache (e.g. 1111011101)",
                )
                .advanced()
                .when("strategy", CACHE_DIT)
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
                // Shown only under the method whose own settings they are.
                "max_skip_steps",
                "retention_ratio",
                "mag_ratios",
                "calibrate",
                "spatial_attention_block_skip_range",
                "spatial_attention_timestep_skip_range",
                "unconditional_batch_skip_range",
                "enable_dynamic_prune_threshold",
                "reuse_threshold",
                "start_percent",
                "end_percent",
                "cache_ratio_threshold",
                "motion_threshold",
                "linear_map",
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
