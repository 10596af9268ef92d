//! ComfyUI's EasyCache (`comfy_extras/nodes_easycache.py`, the revision that slices the cache
//! diff per branch) as a [`TransformerHook`] around the whole model: between `start_percent`
//! and `end_percent` of the run it predicts how much the output would change from how much the
//! input moved since the last computed call (`k · mean|Δx| / mean|out_prev|`, with `k` the
//! last measured output-to-input change ratio), sums that prediction over skipped calls, and
//! while the sum stays strictly below `reuse_threshold` returns `x + (out − x)` of the last
//! computed call, per CFG half, without running the model. Changes are measured on one branch
//! (ComfyUI's first entry: the unconditional half of a batched CFG call, or the first call of
//! a step under separate CFG, which then decides for the step), subsampled every
//! `subsample_factor`-th row and column; `x` and the output are the model's input and its
//! latent channels. The first two calls in the window compute (nothing to predict with yet).
//! The window is ComfyUI's `percent_to_sigma`, as timesteps ([`ShareMap`]).

use super::config::{invalid, CacheConfigError, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use crate::models::blocks::{self, run_order, BlockTransformer, Conditioning};
use crate::schedulers::ShareMap;
use candle_core::{DType, Result, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// EasyCache's settings (the ComfyUI node's names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EasyCacheParams {
    /// Skip while the summed predicted change stays below this (0–3 in ComfyUI).
    pub reuse_threshold: f64,
    /// The share of the run where the rule starts (ComfyUI's `start_percent`).
    pub start_percent: f64,
    /// The share where it ends: later calls always run (`end_percent`).
    pub end_percent: f64,
    /// Every n-th row and column enter the change measures (fixed at 8 in ComfyUI).
    pub subsample_factor: usize,
}

impl Default for EasyCacheParams {
    /// ComfyUI's defaults.
    fn default() -> Self {
        EasyCacheParams {
            reuse_threshold: 0.2,
            start_percent: 0.15,
            end_percent: 0.95,
            subsample_factor: 8,
        }
    }
}

impl EasyCacheParams {
    pub fn validate(&self) -> std::result::Result<(), CacheConfigError> {
        if !self.reuse_threshold.is_finite() || self.reuse_threshold < 0.0 {
            return Err(invalid("reuse_threshold", "must be 0 or more"));
        }
        for (field, v) in [
            ("start_percent", self.start_percent),
            ("end_percent", self.end_percent),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(field, "a share of the run, 0 to 1"));
            }
        }
        if self.subsample_factor == 0 {
            return Err(invalid("subsample_factor", "must be at least 1"));
        }
        Ok(())
    }
}

/// A part of a call's batch: ComfyUI's entry (uuid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Cond,
    Uncond,
    /// No guidance: one entry.
    Only,
}

/// The parts of a call, in batch order (this project batches `[cond; uncond]`).
fn parts(info: &CallInfo) -> Vec<Part> {
    if info.batched_cfg {
        vec![Part::Cond, Part::Uncond]
    } else {
        match info.branch {
            CfgBranch::Cond => vec![Part::Cond],
            CfgBranch::Uncond => vec![Part::Uncond],
            CfgBranch::Batched => vec![Part::Only],
        }
    }
}

/// The EasyCache hook; one per sampler run.
#[derive(Debug)]
pub struct EasyCache {
    params: EasyCacheParams,
    /// The entry that measures and decides (chosen at the first call in the window).
    first: Option<Part>,
    /// The step whose first call decided to skip (the others of the step follow it).
    marked: Option<usize>,
    cumulative: f32,
    /// `k`: output change ÷ input change between the last two computed calls.
    rate: Option<f32>,
    x_prev: Option<Tensor>,
    out_prev: Option<Tensor>,
    out_prev_norm: Option<f32>,
    /// `out − x` of each part's last computed call.
    diffs: BTreeMap<Part, Tensor>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl EasyCache {
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.easycache.validate()?;
        Ok(EasyCache {
            params: config.easycache.clone(),
            first: None,
            marked: None,
            cumulative: 0.0,
            rate: None,
            x_prev: None,
            out_prev: None,
            out_prev_norm: None,
            diffs: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }

    /// `t[.., ::f, ::f]` of the part at `index` of a batch made of `count` equal parts.
    fn subsample(&self, t: &Tensor, index: usize, count: usize) -> Result<Tensor> {
        let rows = t.dim(0)? / count.max(1);
        let slice = t.narrow(0, index * rows, rows)?;
        let f = self.params.subsample_factor;
        if f <= 1 {
            return Ok(slice);
        }
        let (_, _, h, w) = slice.dims4()?;
        let pick = |n: usize| -> Result<Tensor> {
            let at: Vec<u32> = (0..n).step_by(f).map(|i| i as u32).collect();
            Tensor::from_vec(at.clone(), at.len(), t.device())
        };
        slice.index_select(&pick(h)?, 2)?.index_select(&pick(w)?, 3)
    }

    /// `x + diff` per part.
    fn apply(&self, x: &Tensor, parts: &[Part]) -> Result<Tensor> {
        let rows = x.dim(0)? / parts.len().max(1);
        let mut pieces = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let Some(diff) = self.diffs.get(part) else {
                candle_core::bail!("easycache: no stored change for a branch");
            };
            pieces.push((x.narrow(0, i * rows, rows)? + diff)?);
        }
        Tensor::cat(&pieces, 0)
    }

    fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.diffs.values().map(size).sum::<usize>()
            + self.x_prev.as_ref().map_or(0, size)
            + self.out_prev.as_ref().map_or(0, size)
    }
}

/// `mean|a − b|` in f32.
fn mean_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .mean_all()?
        .to_scalar::<f32>()
}

/// What decided a call, for its record.
struct Outcome {
    decision: Decision,
    reason: Reason,
    compared: Option<f64>,
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for EasyCache {
    fn reset(&mut self) {
        let params = self.params.clone();
        let Ok(fresh) = EasyCache::new(Arc::new(StepCacheConfig {
            easycache: params,
            ..StepCacheConfig::default()
        })) else {
            return;
        };
        *self = fresh;
    }

    fn call(
        &mut self,
        model: &M,
        info: &CallInfo,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let started = Instant::now();
        let blocks = run_order(model.block_lists()).len();
        let channels = model.latent().channels;
        let shares: ShareMap = info.shares;
        let t = info.timestep;
        let step = info.step_index;
        if self.marked.is_some_and(|s| s != step) {
            self.marked = None;
        }
        let parts = parts(info);
        let record = |me: &mut Self, outcome: Outcome, ran: bool| {
            me.peak_bytes = me.peak_bytes.max(me.bytes());
            me.records.push(CallRecord {
                step,
                branch: info.branch,
                decision: outcome.decision,
                reason: outcome.reason,
                diff: outcome.compared,
                threshold: outcome.compared.map(|_| me.params.reuse_threshold),
                blocks_run: if ran { blocks } else { 0 },
                blocks_total: blocks,
                ms: started.elapsed().as_secs_f64() * 1e3,
                work: None,
                attention_reused: 0,
                pattern: None,
            });
        };
        // Past the end: the model runs and nothing is kept.
        if t <= shares.timestep_at(self.params.end_percent) {
            let out = blocks::forward(model, x, timesteps, cond)?;
            model.device().synchronize()?;
            record(
                self,
                Outcome {
                    decision: Decision::Computed,
                    reason: Reason::OutsideWindow,
                    compared: None,
                },
                true,
            );
            return Ok(out);
        }
        let in_window = t <= shares.timestep_at(self.params.start_percent);
        let can_apply = parts.iter().all(|p| self.diffs.contains_key(p));
        let mut input_change = None;
        let mut outcome = Outcome {
            decision: Decision::Computed,
            reason: if in_window {
                Reason::NoReference
            } else {
                Reason::OutsideWindow
            },
            compared: None,
        };
        if in_window {
            if self.marked == Some(step) && can_apply {
                let out = self.apply(&x.narrow(1, 0, channels)?, &parts)?;
                record(
                    self,
                    Outcome {
                        decision: Decision::Reused,
                        reason: Reason::ScheduleReuse,
                        compared: None,
                    },
                    false,
                );
                return Ok(out);
            }
            if self.first.is_none() {
                // ComfyUI batches [uncond; cond] and takes its first entry.
                self.first = Some(if parts.contains(&Part::Uncond) && parts.len() > 1 {
                    Part::Uncond
                } else {
                    parts[0]
                });
            }
        }
        let first_at = self.first.and_then(|f| parts.iter().position(|p| *p == f));
        if in_window {
            if let Some(i) = first_at {
                if let Some(prev) = &self.x_prev {
                    input_change = Some(mean_abs_diff(
                        &self.subsample(&x.narrow(1, 0, channels)?, i, parts.len())?,
                        prev,
                    )?);
                }
                if let (Some(norm), Some(k), Some(ic)) =
                    (self.out_prev_norm, self.rate, input_change)
                {
                    self.cumulative += k * ic / norm;
                    let compared = Some(self.cumulative as f64);
                    if self.cumulative < self.params.reuse_threshold as f32 && can_apply {
                        self.marked = Some(step);
                        let out = self.apply(&x.narrow(1, 0, channels)?, &parts)?;
                        record(
                            self,
                            Outcome {
                                decision: Decision::Reused,
                                reason: Reason::DiffBelow,
                                compared,
                            },
                            false,
                        );
                        return Ok(out);
                    }
                    self.cumulative = 0.0;
                    outcome.reason = Reason::DiffAbove;
                    outcome.compared = compared;
                }
            }
        }
        let out = blocks::forward(model, x, timesteps, cond)?;
        let latent = out.narrow(1, 0, channels)?;
        let x_lat = x.narrow(1, 0, channels)?;
        if let Some(i) = first_at {
            if self.out_prev_norm.is_some() {
                if let Some(prev) = &self.out_prev {
                    let oc = mean_abs_diff(&self.subsample(&latent, i, parts.len())?, prev)?;
                    if let Some(ic) = input_change {
                        self.rate = Some(oc / ic);
                    }
                }
            }
        }
        let diff = (&latent - &x_lat)?;
        let rows = diff.dim(0)? / parts.len().max(1);
        for (i, part) in parts.iter().enumerate() {
            self.diffs.insert(*part, diff.narrow(0, i * rows, rows)?);
        }
        if let Some(i) = first_at {
            self.x_prev = Some(self.subsample(&x_lat, i, parts.len())?);
            self.out_prev = Some(self.subsample(&latent, i, parts.len())?);
            self.out_prev_norm = Some(
                latent
                    .to_dtype(DType::F32)?
                    .abs()?
                    .mean_all()?
                    .to_scalar::<f32>()?,
            );
        }
        model.device().synchronize()?;
        record(self, outcome, true);
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }

    fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}
