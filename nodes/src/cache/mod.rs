//! The step cache: reuses transformer residuals across denoising steps (cache-dit's DBCache,
//! TaylorSeer and SCM, plus fixed and dynamic counter schedules), one concern per module.

pub mod config;
pub mod hook;
pub mod indicator;
pub mod noise;
pub mod policy;
pub mod record;
pub mod schedule;
pub mod scm;
pub mod signature;
pub mod step_cache;
pub mod summary;
pub mod taylorseer;

pub use config::{
    CacheConfigError, DbCacheConfig, MaskPolicy, MaskSource, StepCacheConfig, StepsMask, Strategy,
    TaylorIndexing, TaylorSeerConfig,
};
pub use record::{CallRecord, CfgBranch, Decision, Reason};
pub use schedule::{schedule_preview, Degenerate, Planned, SchedulePreview};
pub use signature::NO_CACHE;
pub use step_cache::{check_run, StepCache};
pub use summary::{BranchSummary, CacheSummary, DiffStats};
