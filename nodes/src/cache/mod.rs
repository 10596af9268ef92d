//! The step cache: reuses transformer residuals across denoising steps (cache-dit's DBCache,
//! TaylorSeer and SCM, plus fixed and dynamic counter schedules), one concern per module.

pub mod config;
pub mod dbprune;
pub mod easycache;
pub mod fastcache;
pub mod fastercache;
pub mod fbcache;
pub mod hook;
pub mod indicator;
pub mod magcache;
pub mod noise;
pub mod pab;
pub mod policy;
pub mod record;
pub mod schedule;
pub mod scm;
pub mod signature;
pub mod step_cache;
pub mod summary;
pub mod taylorseer;
pub mod teacache;

pub use config::{
    CacheConfigError, DbCacheConfig, MaskPolicy, MaskSource, StepCacheConfig, StepsMask, Strategy,
    TaylorIndexing, TaylorSeerConfig,
};
pub use record::{CallRecord, CfgBranch, Decision, Reason};
pub use schedule::{schedule_preview, Degenerate, Planned, SchedulePreview};
pub use signature::NO_CACHE;
pub use step_cache::{check_run, StepCache};
pub use summary::{BranchSummary, CacheSummary, DiffStats};

/// The hook a cache config asks for, built and validated once for a run of `steps` steps on
/// a model with these block lists: each method's own module by its strategy, the step cache
/// (DBCache, fixed, dynamic) otherwise.
pub fn hook_for_run<M: crate::models::blocks::BlockTransformer + ?Sized>(
    config: std::sync::Arc<StepCacheConfig>,
    lists: &[crate::models::blocks::BlockList],
    steps: usize,
) -> Result<Box<dyn hook::TransformerHook<M>>, config::CacheConfigError>
where
    M::Call: Sized,
{
    let blocks = crate::models::blocks::total_blocks(lists);
    Ok(match config.strategy {
        Strategy::Pab => {
            config.check_blocks(blocks)?;
            Box::new(pab::PyramidAttentionBroadcast::new(config)?)
        }
        Strategy::FasterCache => {
            config.check_blocks(blocks)?;
            Box::new(fastercache::FasterCache::new(config)?)
        }
        Strategy::DbPrune => Box::new(dbprune::DbPrune::for_run(config, blocks, steps)?),
        Strategy::EasyCache => {
            config.check_blocks(blocks)?;
            Box::new(easycache::EasyCache::new(config)?)
        }
        Strategy::FastCache => {
            config.check_blocks(blocks)?;
            Box::new(fastcache::FastCache::new(config)?)
        }
        Strategy::FirstBlock => Box::new(fbcache::FirstBlockCache::for_run(config, lists)?),
        Strategy::MagCache => {
            config.check_blocks(crate::models::blocks::total_blocks(lists))?;
            Box::new(magcache::MagCache::new(config)?)
        }
        Strategy::TeaCache => {
            config.check_blocks(crate::models::blocks::total_blocks(lists))?;
            Box::new(teacache::TeaCache::new(config)?)
        }
        _ => Box::new(StepCache::for_run(config, lists, steps)?),
    })
}
