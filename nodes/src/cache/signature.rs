//! Config signatures in cache-dit's `strify` style (e.g. `DBCache_F4B0_W4I1M0MC3_R0.12_T1O1`),
//! with analogous names for the fixed and dynamic strategies; they name each run's output.

use super::config::{MaskSource, StepCacheConfig, Strategy, TaylorIndexing};
use super::scm::mask_string;

/// The signature of a run without a step cache.
pub const NO_CACHE: &str = "NoCache";

/// A float as Python's `str()` writes it for these values (`0.12`, `1.0`).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

impl StepCacheConfig {
    /// `DBCache_F{Fn}B{Bn}_W{W}I{I}M{max(0,M)}MC{max(0,MC)}_R{thr}` as cache-dit prints it (M0
    /// and MC0 mean unlimited), then `_A{acc}` (accumulated-diff limit), `_SCM-{policy}-{static
    /// |dynamic}`, `_T1O{order}` (TaylorSeer; `-intended` for that indexing) and `_N{noise}`
    /// when set. Fixed: `Fixed_F{Fn}B{Bn}_W{W}K{k}`; dynamic: `Dynamic_F{Fn}B{Bn}_W{W}K{k}MC{max
    /// run}`. Only letters, digits, `.`, `_` and `-`, so it can name a file.
    pub fn signature(&self) -> String {
        let db = &self.db;
        let blocks = format!("F{}B{}", db.fn_compute_blocks, db.bn_compute_blocks);
        let mut s = match self.strategy {
            Strategy::Adaptive => format!(
                "DBCache_{blocks}_W{}I{}M{}MC{}_R{}",
                db.max_warmup_steps,
                db.warmup_interval,
                db.max_cached_steps.max(0),
                db.max_continuous_cached_steps.max(0),
                py_float(db.residual_diff_threshold)
            ),
            Strategy::Fixed => format!(
                "Fixed_{blocks}_W{}K{}",
                db.max_warmup_steps, self.skip_interval
            ),
            Strategy::Dynamic => format!(
                "Dynamic_{blocks}_W{}K{}MC{}",
                db.max_warmup_steps,
                self.skip_interval,
                db.max_continuous_cached_steps.max(0)
            ),
            // Its threshold is its only setting.
            Strategy::FirstBlock => {
                return format!("FBCache_R{}", py_float(db.residual_diff_threshold))
            }
            Strategy::TeaCache => {
                return format!("TeaCache_R{}", py_float(db.residual_diff_threshold))
            }
            // diffusers' field order: threshold, max_skip_steps, retention_ratio.
            Strategy::MagCache => {
                let m = &self.magcache;
                return format!(
                    "MagCache_R{}K{}RR{}{}",
                    py_float(db.residual_diff_threshold),
                    m.max_skip_steps,
                    py_float(m.retention_ratio),
                    if m.calibrate { "_calibrate" } else { "" }
                );
            }
            // cache-dit's DBPruneConfig.strify (no SCM, noise or TaylorSeer parts).
            Strategy::DbPrune => {
                let mut s = format!(
                    "DBPrune_{blocks}_W{}I{}M{}MC{}_R{}",
                    db.max_warmup_steps,
                    db.warmup_interval,
                    db.max_cached_steps.max(0),
                    db.max_continuous_cached_steps.max(0),
                    py_float(db.residual_diff_threshold)
                );
                let p = &self.dbprune;
                if p.enable_dynamic_prune_threshold {
                    s.push_str(&format!(
                        "_D{}",
                        py_float(p.dynamic_prune_threshold_relax_ratio)
                    ));
                }
                if !p.non_prune_block_ids.is_empty() {
                    let ids: Vec<String> = p
                        .non_prune_block_ids
                        .iter()
                        .map(|i| i.to_string())
                        .collect();
                    s.push_str(&format!("_NP{}", ids.join("-")));
                }
                if let Some(mask) = &db.steps_mask {
                    let source = match &mask.source {
                        MaskSource::Preset(p) => p.name().to_string(),
                        MaskSource::Custom(bits) => format!("custom{}", mask_string(bits)),
                    };
                    s.push_str(&format!("_SCM-{source}-{}", mask.policy.name()));
                }
                return s;
            }
            Strategy::Pab => {
                let p = &self.pab;
                return format!(
                    "PAB_N{}_T{}-{}",
                    p.block_skip_range,
                    py_float(p.timestep_skip_range.0),
                    py_float(p.timestep_skip_range.1)
                );
            }
            Strategy::FasterCache => {
                let p = &self.fastercache;
                return format!(
                    "FasterCache_A{}U{}_W{}_L{}H{}",
                    p.spatial_attention_block_skip_range,
                    p.unconditional_batch_skip_range,
                    py_float(p.attention_weight),
                    py_float(p.alpha_low_frequency),
                    py_float(p.alpha_high_frequency)
                );
            }
            Strategy::EasyCache => {
                let p = &self.easycache;
                return format!(
                    "EasyCache_R{}_S{}E{}{}",
                    py_float(p.reuse_threshold),
                    py_float(p.start_percent),
                    py_float(p.end_percent),
                    if p.subsample_factor == 8 {
                        String::new()
                    } else {
                        format!("_X{}", p.subsample_factor)
                    }
                );
            }
            Strategy::FastCache => {
                let p = &self.fastcache;
                return format!(
                    "FastCache_R{}_M{}_{}",
                    py_float(p.cache_ratio_threshold),
                    py_float(p.motion_threshold),
                    p.linear_map.name()
                );
            }
        };
        if self.strategy == Strategy::Adaptive {
            if let Some(acc) = db.max_accumulated_residual_diff_threshold {
                s.push_str(&format!("_A{}", py_float(acc)));
            }
            if let Some(mask) = &db.steps_mask {
                let source = match &mask.source {
                    MaskSource::Preset(p) => p.name().to_string(),
                    MaskSource::Custom(bits) => format!("custom{}", mask_string(bits)),
                };
                s.push_str(&format!("_SCM-{source}-{}", mask.policy.name()));
            }
        }
        if let Some(ts) = &self.taylorseer {
            s.push_str(&format!("_T1O{}", ts.order));
            if ts.indexing == TaylorIndexing::Intended {
                s.push_str("-intended");
            }
        }
        if self.noise_scale > 0.0 {
            s.push_str(&format!("_N{}", py_float(self.noise_scale)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::config::{MaskPolicy, StepsMask, TaylorSeerConfig};
    use crate::cache::scm::ScmPreset;

    #[test]
    fn signatures_read_like_cache_dits() {
        let mut c = StepCacheConfig::studio_default();
        c.noise_scale = 0.0;
        c.taylorseer = Some(TaylorSeerConfig {
            order: 1,
            indexing: TaylorIndexing::CacheDit,
        });
        assert_eq!(c.signature(), "DBCache_F4B0_W4I1M0MC3_R0.12_T1O1");
        let d = StepCacheConfig::default();
        assert_eq!(
            d.signature(),
            "DBCache_F8B0_W8I1M0MC0_R0.08",
            "−1 prints as 0"
        );
        let mut scm = StepCacheConfig::studio_default();
        scm.noise_scale = 0.0;
        scm.db.residual_diff_threshold = 1.0;
        scm.db.steps_mask = Some(StepsMask {
            source: MaskSource::Preset(ScmPreset::Medium),
            policy: MaskPolicy::Dynamic,
        });
        assert_eq!(
            scm.signature(),
            "DBCache_F4B0_W4I1M0MC3_R1.0_SCM-medium-dynamic"
        );
        let mut fixed = StepCacheConfig::studio_default();
        fixed.strategy = Strategy::Fixed;
        assert_eq!(fixed.signature(), "Fixed_F4B0_W4K2_N0.001");
        let mut dynamic = StepCacheConfig::studio_default();
        dynamic.strategy = Strategy::Dynamic;
        dynamic.noise_scale = 0.0;
        assert_eq!(dynamic.signature(), "Dynamic_F4B0_W4K2MC3");
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        assert!([c, scm, fixed, dynamic].iter().all(|c| ok(&c.signature())));
    }
}
