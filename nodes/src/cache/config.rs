//! Step-cache settings: the strategy, cache-dit's DBCache knobs (with cache-dit's code
//! defaults), SCM, TaylorSeer and noise; validation errors name the field at fault.

use super::scm::ScmPreset;
use serde::Serialize;

/// How reuse is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Strategy {
    /// After warmup, a fixed 1-in-`skip_interval` pattern of reused steps, by step index.
    Fixed,
    /// Reuse grows more frequent along the trajectory, with bounded runs of reuses; the last
    /// step always computes.
    Dynamic,
    /// cache-dit's DBCache: the front blocks' residual decides (plus warmup, limits, SCM).
    Adaptive,
    /// diffusers' First Block Cache: the first block's residual against the last computed
    /// one; no warmup, no limits (cache/fbcache.rs).
    FirstBlock,
    /// TeaCache: the accumulated, rescaled change of block 0's modulated input skips the
    /// whole stack (cache/teacache.rs).
    TeaCache,
    /// MagCache: per-step magnitude ratios, accumulated, skip the whole stack
    /// (cache/magcache.rs).
    MagCache,
    /// Pyramid Attention Broadcast: attention outputs served from the last computed call
    /// inside a timestep window (cache/pab.rs).
    Pab,
    /// FasterCache: the unconditional half rebuilt in the frequency domain and attention
    /// extrapolated from its last two outputs (cache/fastercache.rs).
    FasterCache,
    /// cache-dit's DBPrune: every middle block pruned on its own input diff
    /// (cache/dbprune.rs).
    DbPrune,
    /// ComfyUI's EasyCache: the whole model skipped while its predicted output change stays
    /// small (cache/easycache.rs).
    EasyCache,
    /// FastCache: static tokens bypass the stack, blocks whose input barely moved are
    /// approximated by a linear map (cache/fastcache.rs).
    FastCache,
}

impl Strategy {
    pub const NAMES: &'static [&'static str] = &[
        "fixed",
        "dynamic",
        "adaptive",
        "fbcache",
        "teacache",
        "magcache",
        "pab",
        "fastercache",
        "dbprune",
        "easycache",
        "fastcache",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fixed" => Some(Strategy::Fixed),
            "dynamic" => Some(Strategy::Dynamic),
            "adaptive" => Some(Strategy::Adaptive),
            "fbcache" => Some(Strategy::FirstBlock),
            "teacache" => Some(Strategy::TeaCache),
            "magcache" => Some(Strategy::MagCache),
            "pab" => Some(Strategy::Pab),
            "fastercache" => Some(Strategy::FasterCache),
            "dbprune" => Some(Strategy::DbPrune),
            "easycache" => Some(Strategy::EasyCache),
            "fastcache" => Some(Strategy::FastCache),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed => "fixed",
            Strategy::Dynamic => "dynamic",
            Strategy::Adaptive => "adaptive",
            Strategy::FirstBlock => "fbcache",
            Strategy::TeaCache => "teacache",
            Strategy::MagCache => "magcache",
            Strategy::Pab => "pab",
            Strategy::FasterCache => "fastercache",
            Strategy::DbPrune => "dbprune",
            Strategy::EasyCache => "easycache",
            Strategy::FastCache => "fastcache",
        }
    }
}

/// What a mask-0 step does (cache-dit's `steps_computation_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MaskPolicy {
    /// Always reuse; no diff, no limits.
    Static,
    /// The normal limit and threshold rules decide.
    Dynamic,
}

impl MaskPolicy {
    pub const NAMES: &'static [&'static str] = &["dynamic", "static"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "static" => Some(MaskPolicy::Static),
            "dynamic" => Some(MaskPolicy::Dynamic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MaskPolicy::Static => "static",
            MaskPolicy::Dynamic => "dynamic",
        }
    }
}

/// Where the steps-computation mask comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MaskSource {
    /// cache-dit's `steps_mask(total_steps, policy)`, built for the run's step count.
    Preset(ScmPreset),
    /// A user mask, one entry per step (`true` = compute). Steps past its end are cache steps,
    /// as in cache-dit.
    Custom(Vec<bool>),
}

/// SCM: a per-step compute/cache mask and what its cache steps do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepsMask {
    pub source: MaskSource,
    pub policy: MaskPolicy,
}

/// How the TaylorSeer stream numbers its steps (ALGORITHMS.md §1.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TaylorIndexing {
    /// cache-dit's pipeline-mode behaviour: derivatives only from updates at branch step ≥ 3.
    CacheDit,
    /// Derivatives from the second update on (the rule cache-dit's own comments describe).
    Intended,
}

impl TaylorIndexing {
    pub const NAMES: &'static [&'static str] = &["cache-dit", "intended"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cache-dit" => Some(TaylorIndexing::CacheDit),
            "intended" => Some(TaylorIndexing::Intended),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TaylorIndexing::CacheDit => "cache-dit",
            TaylorIndexing::Intended => "intended",
        }
    }
}

/// The TaylorSeer calibrator: forecast the middle residual instead of reusing it stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaylorSeerConfig {
    /// Number of finite-difference derivatives, 1 to 4.
    pub order: usize,
    pub indexing: TaylorIndexing,
}

/// cache-dit's `DBCacheConfig`, with its code defaults (`Default`).
///
/// Not carried over: `enable_separate_cfg` (the Sampler's `cfg_mode` says how guidance runs),
/// `cfg_compute_first` (the conditional call always comes first here, which is cache-dit's
/// default and what `cfg_diff_compute_separate = false` needs), `num_inference_steps` and
/// `force_refresh_*` (state resets at the start of every run, so no refresh rule is needed),
/// and the internal `ExtraCacheConfig` that cache-dit tells users never to set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbCacheConfig {
    /// Front blocks that always run; their residual is the indicator.
    pub fn_compute_blocks: usize,
    /// Back blocks that always run after the (reused) middle.
    pub bn_compute_blocks: usize,
    /// Reuse iff the relative-L1 diff is strictly below this; ≤ 0 never, ≥ 1 always.
    pub residual_diff_threshold: f64,
    /// Warmup window length in steps.
    pub max_warmup_steps: usize,
    /// Stride of forced computes inside the warmup window.
    pub warmup_interval: usize,
    /// Cached steps allowed per run and branch; −1 unlimited, 0 never.
    pub max_cached_steps: i64,
    /// cache-dit's continuous-cached counter limit; −1 unlimited, 0 never.
    pub max_continuous_cached_steps: i64,
    /// Stop reusing for the rest of the run once the summed diffs reach this.
    pub max_accumulated_residual_diff_threshold: Option<f64>,
    /// With separate CFG: the unconditional call measures its own diff (true) or takes the
    /// conditional call's diff of the same step (false).
    pub cfg_diff_compute_separate: bool,
    /// SCM steps-computation mask.
    pub steps_mask: Option<StepsMask>,
}

impl Default for DbCacheConfig {
    fn default() -> Self {
        DbCacheConfig {
            fn_compute_blocks: 8,
            bn_compute_blocks: 0,
            residual_diff_threshold: 0.08,
            max_warmup_steps: 8,
            warmup_interval: 1,
            max_cached_steps: -1,
            max_continuous_cached_steps: -1,
            max_accumulated_residual_diff_threshold: None,
            cfg_diff_compute_separate: true,
            steps_mask: None,
        }
    }
}

/// Everything the step cache needs; carried from the config node to a Sampler.
/// MagCache's settings besides its threshold (diffusers' `MagCacheConfig` names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MagCacheParams {
    /// At most this many skipped steps in a row.
    pub max_skip_steps: usize,
    /// This share of the first steps always computes (`floor(ratio·N + 0.5)` steps).
    pub retention_ratio: f64,
    /// Per-step magnitude ratios (resampled to the step count); `None` = the model's own.
    pub mag_ratios: Option<Vec<f64>>,
    /// Compute every step and record the ratios instead.
    pub calibrate: bool,
}

impl Default for MagCacheParams {
    /// diffusers' defaults.
    fn default() -> Self {
        MagCacheParams {
            max_skip_steps: 3,
            retention_ratio: 0.2,
            mag_ratios: None,
            calibrate: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCacheConfig {
    pub strategy: Strategy,
    /// Block partition, warmup, limits, threshold, SCM. Fixed and dynamic use the partition,
    /// the warmup and (dynamic) `max_continuous_cached_steps` as the run bound.
    pub db: DbCacheConfig,
    /// Fixed: one step in `skip_interval` is reused. Dynamic: the starting period.
    pub skip_interval: usize,
    pub taylorseer: Option<TaylorSeerConfig>,
    /// Noise added to a reused residual, relative to that residual's mean |value|.
    pub noise_scale: f64,
    /// Seed of that noise (mixed with step and branch), so runs are reproducible.
    pub noise_seed: u64,
    /// MagCache's settings (used by `magcache` only).
    pub magcache: MagCacheParams,
    /// TeaCache's rescale polynomial (highest power first) when given; `None` = the model
    /// family's (`teacache`).
    pub teacache_coefficients: Option<Vec<f64>>,
    /// Pyramid Attention Broadcast's (`pab`).
    pub pab: super::pab::PabParams,
    /// FasterCache's (`fastercache`).
    pub fastercache: super::fastercache::FasterCacheParams,
    /// DBPrune's own (`dbprune`; the rest are DBCache's).
    pub dbprune: super::dbprune::DbPruneParams,
    /// EasyCache's (`easycache`).
    pub easycache: super::easycache::EasyCacheParams,
    /// FastCache's (`fastcache`).
    pub fastcache: super::fastcache::FastCacheParams,
}

impl Default for StepCacheConfig {
    /// DBCache with cache-dit's code defaults.
    fn default() -> Self {
        StepCacheConfig::method_defaults()
    }
}

/// A setting that cannot work; `field` is the config node's param name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cache config `{field}`: {message}")]
pub struct CacheConfigError {
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> CacheConfigError {
    CacheConfigError {
        field,
        message: message.into(),
    }
}

impl StepCacheConfig {
    /// DBCache's code defaults with every method's own defaults (the base the constructors
    /// below fill in).
    fn method_defaults() -> Self {
        StepCacheConfig {
            strategy: Strategy::Adaptive,
            db: DbCacheConfig::default(),
            skip_interval: 2,
            taylorseer: None,
            noise_scale: 0.0,
            noise_seed: 0,
            magcache: MagCacheParams::default(),
            teacache_coefficients: None,
            pab: Default::default(),
            fastercache: Default::default(),
            dbprune: Default::default(),
            easycache: Default::default(),
            fastcache: Default::default(),
        }
    }

    /// diffusers' First Block Cache at `threshold`: F1B0, no warmup, no limits, no
    /// calibrator, no noise (cache/fbcache.rs).
    pub fn first_block(threshold: f64) -> Self {
        StepCacheConfig::threshold_only(Strategy::FirstBlock, threshold)
    }

    /// TeaCache at `threshold` (`rel_l1_thresh`), with the model's rescale polynomial.
    pub fn tea_cache(threshold: f64) -> Self {
        StepCacheConfig::threshold_only(Strategy::TeaCache, threshold)
    }

    /// A method whose only setting is its threshold.
    fn threshold_only(strategy: Strategy, threshold: f64) -> Self {
        StepCacheConfig {
            strategy,
            db: super::fbcache::as_db_rules(threshold),
            skip_interval: 2,
            taylorseer: None,
            noise_scale: 0.0,
            noise_seed: 0,
            ..StepCacheConfig::method_defaults()
        }
    }

    /// A method without a residual-diff threshold (its own params decide): no warmup, no
    /// limits, no calibrator or noise.
    pub fn threshold_free(strategy: Strategy) -> Self {
        StepCacheConfig::threshold_only(strategy, 0.0)
    }

    /// MagCache at `threshold` with `params`.
    pub fn mag_cache(threshold: f64, params: MagCacheParams) -> Self {
        StepCacheConfig {
            magcache: params,
            ..StepCacheConfig::threshold_only(Strategy::MagCache, threshold)
        }
    }

    /// The studio's defaults, which the config node shows: DBCache F4B0, warmup 4, at most 3
    /// continuous cached steps, threshold 0.12 (cache-dit's benchmark "S" setting, sized for
    /// 12-block models), no calibrator, and reuse noise 0.001 of the residual's magnitude (the
    /// ComfyUI plugin's default value, made relative; it moves a few 8-bit pixel levels at
    /// most, see the `default_noise_does_not_change_the_image_measurably` test).
    pub fn studio_default() -> Self {
        StepCacheConfig {
            strategy: Strategy::Adaptive,
            db: DbCacheConfig {
                fn_compute_blocks: 4,
                bn_compute_blocks: 0,
                residual_diff_threshold: 0.12,
                max_warmup_steps: 4,
                warmup_interval: 1,
                max_cached_steps: -1,
                max_continuous_cached_steps: 3,
                max_accumulated_residual_diff_threshold: None,
                cfg_diff_compute_separate: true,
                steps_mask: None,
            },
            skip_interval: 2,
            taylorseer: None,
            noise_scale: 0.001,
            noise_seed: 0,
            ..StepCacheConfig::method_defaults()
        }
    }

    /// Checks what can be checked without a model or step count.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        let db = &self.db;
        if self.strategy == Strategy::Adaptive && db.fn_compute_blocks == 0 {
            return Err(invalid(
                "Fn_compute_blocks",
                "the adaptive strategy needs at least 1 front block: its residual is the indicator",
            ));
        }
        if db.warmup_interval == 0 {
            return Err(invalid("warmup_interval", "must be at least 1"));
        }
        if !db.residual_diff_threshold.is_finite() {
            return Err(invalid("residual_diff_threshold", "must be a number"));
        }
        if db.max_cached_steps < -1 {
            return Err(invalid(
                "max_cached_steps",
                "−1 (unlimited), 0 (never) or a count",
            ));
        }
        if db.max_continuous_cached_steps < -1 {
            return Err(invalid(
                "max_continuous_cached_steps",
                "−1 (unlimited), 0 (never) or a count",
            ));
        }
        if let Some(acc) = db.max_accumulated_residual_diff_threshold {
            if !acc.is_finite() || acc <= 0.0 {
                return Err(invalid(
                    "max_accumulated_residual_diff_threshold",
                    "must be above 0 (0 in the node means off)",
                ));
            }
        }
        if matches!(self.strategy, Strategy::Fixed | Strategy::Dynamic) {
            if self.skip_interval == 0 {
                return Err(invalid("skip_interval", "must be at least 1"));
            }
            if db.steps_mask.is_some() {
                return Err(invalid(
                    "scm_policy",
                    format!(
                        "SCM masks belong to the adaptive strategy; {} makes its own schedule",
                        self.strategy.name()
                    ),
                ));
            }
        }
        if self.strategy == Strategy::Dynamic && db.max_continuous_cached_steps < 0 {
            return Err(invalid(
                "max_continuous_cached_steps",
                "the dynamic strategy needs a bound on consecutive reuses (0 or more)",
            ));
        }
        if let Some(ts) = &self.taylorseer {
            if !(1..=4).contains(&ts.order) {
                return Err(invalid(
                    "taylorseer_order",
                    format!("{} is not an order from 1 to 4", ts.order),
                ));
            }
        }
        if !self.noise_scale.is_finite() || self.noise_scale < 0.0 {
            return Err(invalid("noise_scale", "must be 0 or more"));
        }
        if let Some(StepsMask {
            source: MaskSource::Custom(mask),
            ..
        }) = &db.steps_mask
        {
            if mask.is_empty() {
                return Err(invalid(
                    "scm_mask",
                    "the custom mask is empty: give one 1 (compute) or 0 (cache) per step",
                ));
            }
        }
        Ok(())
    }

    /// Checks the block partition against a model with `num_blocks` blocks (cache-dit asserts
    /// `Fn ≤ N` and `Bn ≤ N` separately; `Fn + Bn ≥ N` is allowed and saves nothing).
    pub fn check_blocks(&self, num_blocks: usize) -> Result<(), CacheConfigError> {
        let db = &self.db;
        if self.strategy == Strategy::FirstBlock {
            // diffusers pops a head and a tail block: one block is not enough.
            if num_blocks < 2 {
                return Err(invalid(
                    "strategy",
                    format!("fbcache needs at least 2 blocks; the model has {num_blocks}"),
                ));
            }
            return Ok(());
        }
        if matches!(
            self.strategy,
            Strategy::TeaCache
                | Strategy::MagCache
                | Strategy::Pab
                | Strategy::FasterCache
                | Strategy::EasyCache
                | Strategy::FastCache
        ) {
            return if num_blocks == 0 {
                Err(invalid("strategy", "this method needs a model with blocks"))
            } else {
                Ok(())
            };
        }
        if db.fn_compute_blocks > num_blocks {
            return Err(invalid(
                "Fn_compute_blocks",
                format!(
                    "{} front blocks, but the model has {num_blocks} blocks",
                    db.fn_compute_blocks
                ),
            ));
        }
        if db.bn_compute_blocks > num_blocks {
            return Err(invalid(
                "Bn_compute_blocks",
                format!(
                    "{} back blocks, but the model has {num_blocks} blocks",
                    db.bn_compute_blocks
                ),
            ));
        }
        Ok(())
    }

    /// The middle (cacheable) blocks of a model with `num_blocks` blocks; empty when
    /// `Fn + Bn ≥ N`.
    pub fn middle_blocks(&self, num_blocks: usize) -> std::ops::Range<usize> {
        let start = self.db.fn_compute_blocks.min(num_blocks);
        let end = num_blocks
            .saturating_sub(self.db.bn_compute_blocks)
            .max(start);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cache_dits_code_defaults() {
        let d = DbCacheConfig::default();
        assert_eq!((d.fn_compute_blocks, d.bn_compute_blocks), (8, 0));
        assert_eq!(d.residual_diff_threshold, 0.08);
        assert_eq!((d.max_warmup_steps, d.warmup_interval), (8, 1));
        assert_eq!(
            (d.max_cached_steps, d.max_continuous_cached_steps),
            (-1, -1)
        );
        assert_eq!(d.max_accumulated_residual_diff_threshold, None);
        assert!(d.cfg_diff_compute_separate);
        assert!(StepCacheConfig::default().validate().is_ok());
        assert!(StepCacheConfig::studio_default().validate().is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let field = |c: StepCacheConfig| c.validate().err().map(|e| e.field);
        let mut c = StepCacheConfig::studio_default();
        c.db.fn_compute_blocks = 0;
        assert_eq!(field(c.clone()), Some("Fn_compute_blocks"));
        c.strategy = Strategy::Fixed;
        assert_eq!(
            field(c.clone()),
            None,
            "counter strategies may reuse from block 0"
        );
        c.skip_interval = 0;
        assert_eq!(field(c.clone()), Some("skip_interval"));
        let mut c = StepCacheConfig::studio_default();
        c.strategy = Strategy::Dynamic;
        c.db.max_continuous_cached_steps = -1;
        assert_eq!(field(c), Some("max_continuous_cached_steps"));
        let mut c = StepCacheConfig::studio_default();
        c.taylorseer = Some(TaylorSeerConfig {
            order: 5,
            indexing: TaylorIndexing::CacheDit,
        });
        assert_eq!(field(c), Some("taylorseer_order"));
        let mut c = StepCacheConfig::studio_default();
        c.strategy = Strategy::Fixed;
        c.db.steps_mask = Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::Medium),
            policy: MaskPolicy::Dynamic,
        });
        assert_eq!(field(c), Some("scm_policy"));
        let mut c = StepCacheConfig::studio_default();
        c.db.warmup_interval = 0;
        assert_eq!(field(c), Some("warmup_interval"));
        let mut c = StepCacheConfig::studio_default();
        c.noise_scale = -1.0;
        assert_eq!(field(c), Some("noise_scale"));
    }

    #[test]
    fn partition_follows_fn_and_bn() {
        let mut c = StepCacheConfig::studio_default();
        assert_eq!(c.middle_blocks(12), 4..12);
        c.db.bn_compute_blocks = 2;
        assert_eq!(c.middle_blocks(12), 4..10);
        c.db.fn_compute_blocks = 8;
        c.db.bn_compute_blocks = 8;
        assert!(c.middle_blocks(12).is_empty(), "Fn + Bn ≥ N leaves M empty");
        assert!(c.check_blocks(12).is_ok());
        c.db.fn_compute_blocks = 13;
        assert_eq!(
            c.check_blocks(12).err().map(|e| e.field),
            Some("Fn_compute_blocks")
        );
    }
}
