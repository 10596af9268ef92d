//! FastCache (FastCache-xDiT, arXiv 2505.20353; ALGORITHMS.md §4, the rule of the research
//! notes' §5) as a [`TransformerHook`], per CFG branch:
//!
//! * **tokens**: each image token's saliency is its squared change since the previous call
//!   (the most any batch row moved), divided by the largest; tokens above `motion_threshold`
//!   are "motion" tokens, the rest are static and bypass the whole stack through the
//!   linear map; when more than half move, every token runs (path A's fallback);
//! * **blocks**: for the motion tokens, block `l`'s input is compared with its input on the
//!   last call that computed it, `δ = ‖g − A‖_F / ‖A‖_F`; the block is approximated by its
//!   linear map when `δ ≤ max(cache_ratio_threshold, min(χ², β₀ + β₁δ + β₂t̂ + β₃t̂²))`
//!   (path A's threshold: the χ² bound `√((MD + 1.96√(2MD))/MD)` and the adaptive term with
//!   β = (0.01, 0.5, −0.002, 0.00005), t̂ = t/1000), else it runs and becomes the anchor.
//!
//! The linear maps: the paper's are learnable and its code leaves them randomly initialised
//! (never fitted or loaded), so no reference weights exist. `identity` (W = I, b = 0, the
//! training-free reading of the paper) skips an approximated block and passes static tokens'
//! stack input through; `residual` (the default, this project's reading of "reuse latent
//! activations") keeps W = I with b = the block's (or, for static tokens, the whole stack's)
//! last computed residual of that token.

use super::config::{invalid, CacheConfigError, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::record::{CallRecord, CfgBranch, Decision, Reason};
use crate::models::blocks::{run_order, BlockTransformer, Conditioning, Streams};
use candle_core::{DType, Result, Tensor, D};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The χ² quantile approximation's z (α = 0.05), as both code paths hard-code it.
const Z: f64 = 1.96;
/// The adaptive threshold's β₀ … β₃ (the code's defaults).
const BETA: [f64; 4] = [0.01, 0.5, -0.002, 0.00005];
/// More motion tokens than this share: every token runs.
const MOTION_FALLBACK: f64 = 0.5;

/// The linear map an approximated block (and a static token) goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LinearMap {
    /// W = I, b = 0: the block is skipped, a static token keeps its stack input.
    Identity,
    /// W = I, b = the last computed residual of that token (block, or whole stack).
    Residual,
}

impl LinearMap {
    pub const NAMES: &'static [&'static str] = &["residual", "identity"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "residual" => Some(LinearMap::Residual),
            "identity" => Some(LinearMap::Identity),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LinearMap::Residual => "residual",
            LinearMap::Identity => "identity",
        }
    }
}

/// FastCache's settings (FastCache-xDiT's names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FastCacheParams {
    /// The operative block threshold on δ (the floor of the combined threshold).
    pub cache_ratio_threshold: f64,
    /// τ_s: tokens whose normalised saliency is above it are motion tokens.
    pub motion_threshold: f64,
    pub linear_map: LinearMap,
}

impl Default for FastCacheParams {
    fn default() -> Self {
        FastCacheParams {
            cache_ratio_threshold: 0.05,
            motion_threshold: 0.1,
            linear_map: LinearMap::Residual,
        }
    }
}

impl FastCacheParams {
    pub fn validate(&self) -> std::result::Result<(), CacheConfigError> {
        if !self.cache_ratio_threshold.is_finite() || self.cache_ratio_threshold < 0.0 {
            return Err(invalid("cache_ratio_threshold", "must be 0 or more"));
        }
        if !(0.0..=1.0).contains(&self.motion_threshold) {
            return Err(invalid(
                "motion_threshold",
                "a share of the largest saliency, 0 to 1",
            ));
        }
        Ok(())
    }

    /// The threshold δ is compared with for a block seeing `elements` (= M·D) values at
    /// `t̂ = t/1000` (path A's `max(c, min(stat, adapt))`).
    pub fn block_threshold(&self, delta: f64, elements: usize, t_hat: f64) -> f64 {
        let n = elements.max(1) as f64;
        let stat = ((n + Z * (2.0 * n).sqrt()) / n).sqrt();
        let adapt = BETA[0] + BETA[1] * delta + BETA[2] * t_hat + BETA[3] * t_hat * t_hat;
        self.cache_ratio_threshold.max(stat.min(adapt))
    }
}

/// The motion tokens of a call: indices where the normalised saliency is above `tau`, or all
/// of them (`None`) when more than half move.
pub fn motion_tokens(current: &Tensor, previous: &Tensor, tau: f64) -> Result<Option<Vec<u32>>> {
    // s_i = max over the batch of Σ_d (Δ)²: one token set serves every row.
    let s = (current.to_dtype(DType::F32)? - previous.to_dtype(DType::F32)?)?
        .sqr()?
        .sum(D::Minus1)?
        .max(0)?
        .to_vec1::<f32>()?;
    let top = s.iter().cloned().fold(0f32, f32::max);
    let moving: Vec<u32> = s
        .iter()
        .enumerate()
        .filter(|(_, &v)| top > 0.0 && (v / top) as f64 > tau)
        .map(|(i, _)| i as u32)
        .collect();
    if moving.len() as f64 > MOTION_FALLBACK * s.len() as f64 {
        Ok(None)
    } else {
        Ok(Some(moving))
    }
}

/// `‖a − b‖_F / ‖b‖_F` in f32 (∞ when `b` is 0).
fn relative_change(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() == b.dims() {
        if let (Some(x), Some(y)) = (crate::kernels::CpuF32::of(b), crate::kernels::CpuF32::of(a)) {
            // (Σ(b − a)², Σb²): the stored input is the reference.
            let (num, den) = crate::kernels::simd::l2_distance(x.values(), y.values());
            return Ok(if den > 0.0 {
                (num / den).sqrt()
            } else {
                f64::INFINITY
            });
        }
    }
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
    let den = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
    Ok(if den > 0.0 { num / den } else { f64::INFINITY })
}

/// `base` with the rows `idx` (dim 1) replaced by `rows`.
fn scatter(base: &Tensor, idx: &Tensor, rows: &Tensor) -> Result<Tensor> {
    let old = base.index_select(idx, 1)?;
    base.index_add(idx, &(rows - old)?, 1)
}

#[derive(Debug, Default)]
struct BlockState {
    /// Its input on the last call that computed it (all tokens).
    anchor: Option<Tensor>,
    /// Its residual then (image stream, and text stream for joint blocks).
    residual: Option<Tensor>,
    encoder_residual: Option<Tensor>,
}

#[derive(Debug, Default)]
struct BranchState {
    previous_input: Option<Tensor>,
    /// The whole stack's last residual per token (the static tokens' map under `residual`).
    stack_residual: Option<Tensor>,
    blocks: BTreeMap<usize, BlockState>,
}

impl BranchState {
    fn bytes(&self) -> usize {
        let size = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
        };
        size(&self.previous_input)
            + size(&self.stack_residual)
            + self
                .blocks
                .values()
                .map(|b| size(&b.anchor) + size(&b.residual) + size(&b.encoder_residual))
                .sum::<usize>()
    }
}

/// The FastCache hook; one per sampler run.
#[derive(Debug)]
pub struct FastCache {
    params: FastCacheParams,
    branches: BTreeMap<CfgBranch, BranchState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl FastCache {
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.fastcache.validate()?;
        Ok(FastCache {
            params: config.fastcache.clone(),
            branches: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for FastCache
where
    M::Call: Sized,
{
    fn reset(&mut self) {
        self.branches.clear();
        self.records.clear();
        self.peak_bytes = 0;
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
        let order = run_order(model.block_lists());
        let n_blocks = order.len();
        let (streams, call) = model.embed(x, timesteps, cond)?;
        let h = streams.hidden.clone();
        let (_, tokens, dim) = h.dims3()?;
        let p = self.params.clone();
        let residual_map = p.linear_map == LinearMap::Residual;
        let branch = self.branches.entry(info.branch).or_default();
        let t_hat = info.timestep / 1000.0;

        // Which tokens run: all on the first call, when most move, or when the family cannot
        // run a subset.
        let motion = match &branch.previous_input {
            Some(prev) => motion_tokens(&h, prev, p.motion_threshold)?,
            None => None,
        };
        let first_call = branch.previous_input.is_none();
        branch.previous_input = Some(h.clone());
        let (idx, run_call) = match motion {
            Some(m) if m.len() < tokens => {
                let idx = Tensor::from_vec(m.clone(), m.len(), h.device())?;
                match model.restrict_tokens(&call, &idx)? {
                    Some(c) => (Some(idx), Some(c)),
                    None => (None, None),
                }
            }
            _ => (None, None),
        };
        let moving = idx.as_ref().map_or(Ok(tokens), |i| i.dim(0))?;
        let gather = |t: &Tensor| -> Result<Tensor> {
            match &idx {
                Some(i) => t.index_select(i, 1),
                None => Ok(t.clone()),
            }
        };
        let block_call = run_call.as_ref().unwrap_or(&call);
        let mut g = Streams {
            hidden: gather(&h)?,
            encoder: streams.encoder.clone(),
        };
        let mut pattern = String::with_capacity(n_blocks);
        let mut computed = 0;
        let mut first_measured = None;
        // No token moved: every one is static.
        let blocks = if moving == 0 { &order[..0] } else { &order[..] };
        if moving == 0 {
            pattern.extend(std::iter::repeat_n('S', n_blocks));
        }
        for (l, &at) in blocks.iter().enumerate() {
            let state = branch.blocks.entry(l).or_default();
            let approximate = match (&state.anchor, first_call) {
                (Some(anchor), false) => {
                    let prev = gather(anchor)?;
                    let delta = relative_change(&g.hidden, &prev)?;
                    let thr = p.block_threshold(delta, moving * dim * g.hidden.dim(0)?, t_hat);
                    first_measured.get_or_insert((delta, thr));
                    delta <= thr
                }
                _ => false,
            };
            if approximate {
                if residual_map {
                    if let Some(r) = &state.residual {
                        g.hidden = (&g.hidden + gather(r)?)?;
                    }
                    if let (Some(e), Some(r)) = (&g.encoder, &state.encoder_residual) {
                        g.encoder = Some((e + r)?);
                    }
                }
                pattern.push('A');
                continue;
            }
            let out = model.block(at, &g, block_call)?;
            let residual = (&out.hidden - &g.hidden)?;
            let full = |stored: &Option<Tensor>, rows: &Tensor| -> Result<Tensor> {
                match (&idx, stored) {
                    (Some(i), Some(base)) => scatter(base, i, rows),
                    _ => Ok(rows.clone()),
                }
            };
            let can_store = idx.is_none() || state.anchor.is_some();
            if can_store {
                state.anchor = Some(full(&state.anchor, &g.hidden)?);
                state.residual = Some(full(&state.residual, &residual)?);
                state.encoder_residual = match (&out.encoder, &g.encoder) {
                    (Some(a), Some(b)) => Some((a - b)?),
                    _ => None,
                };
            }
            g = out;
            computed += 1;
            pattern.push('C');
        }
        // Every token's output: the motion tokens from the blocks, the static ones through the
        // map.
        let hidden = match &idx {
            None => g.hidden.clone(),
            Some(i) => {
                let statics = match (&branch.stack_residual, residual_map) {
                    (Some(r), true) => (&h + r)?,
                    _ => h.clone(),
                };
                scatter(&statics, i, &g.hidden)?
            }
        };
        let stack_residual = (&hidden - &h)?;
        branch.stack_residual = Some(match (&idx, &branch.stack_residual) {
            (Some(i), Some(old)) => scatter(old, i, &gather(&stack_residual)?)?,
            _ => stack_residual,
        });
        let out = model.finish(
            &Streams {
                hidden,
                encoder: g.encoder,
            },
            &call,
        )?;
        model.device().synchronize()?;
        let held: usize = self.branches.values().map(BranchState::bytes).sum();
        self.peak_bytes = self.peak_bytes.max(held);
        let share = moving as f64 / tokens.max(1) as f64;
        let reused = computed < n_blocks || moving < tokens;
        self.records.push(CallRecord {
            step: info.step_index,
            branch: info.branch,
            decision: if reused {
                Decision::Reused
            } else {
                Decision::Computed
            },
            reason: match (reused, first_call) {
                (true, _) => Reason::DiffBelow,
                (false, true) => Reason::NoReference,
                (false, false) => Reason::DiffAbove,
            },
            diff: first_measured.map(|(d, _)| d),
            threshold: first_measured.map(|(_, t)| t),
            blocks_run: computed,
            blocks_total: n_blocks,
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: (moving < tokens).then_some(computed as f64 * share),
            attention_reused: 0,
            pattern: Some(pattern),
        });
        Ok(out)
    }

    fn drain_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }

    fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_threshold_is_path_as_and_the_chi_square_bound_never_binds() {
        let p = FastCacheParams::default();
        // stat ≈ 1 for any real size; adapt = 0.01 + 0.5δ − 0.002t̂ + 0.00005t̂².
        let thr = p.block_threshold(0.03, 256 * 128, 0.5);
        assert!((thr - 0.05).abs() < 1e-12, "c binds: {thr}");
        let custom = FastCacheParams {
            cache_ratio_threshold: 0.0,
            ..p.clone()
        };
        let thr = custom.block_threshold(0.03, 256 * 128, 0.5);
        let adapt = 0.01 + 0.5 * 0.03 - 0.002 * 0.5 + 0.00005 * 0.25;
        assert!((thr - adapt).abs() < 1e-12, "{thr} vs {adapt}");
        // δ above ~2: the χ² bound (≈ 1.01 here) is the smaller term.
        let tiny = custom.block_threshold(3.0, 100, 0.0);
        let stat = ((100.0 + 1.96 * 200f64.sqrt()) / 100.0).sqrt();
        assert!((tiny - stat).abs() < 1e-12);
    }

    #[test]
    fn motion_tokens_are_the_normalised_salient_ones_with_the_half_fallback() {
        let dev = Device::Cpu;
        // 4 tokens of width 2, batch 2: token 1 moves by 3 in row 0, token 3 by 1 in row 1.
        let prev = Tensor::zeros((2, 4, 2), DType::F32, &dev).unwrap();
        let mut cur = vec![0f32; 16];
        cur[2] = 3.0; // row 0, token 1
        cur[8 + 6] = 1.0; // row 1, token 3
        let cur = Tensor::from_vec(cur, (2, 4, 2), &dev).unwrap();
        // Saliency: [0, 9, 0, 1] → normalised [0, 1, 0, 0.111].
        assert_eq!(motion_tokens(&cur, &prev, 0.1).unwrap(), Some(vec![1, 3]));
        assert_eq!(motion_tokens(&cur, &prev, 0.2).unwrap(), Some(vec![1]));
        // Three of four move: more than half, so every token runs.
        let all = (cur.clone() + 1.0).unwrap();
        assert_eq!(motion_tokens(&all, &prev, 0.1).unwrap(), None);
        // Nothing moved: no motion token (a static call).
        assert_eq!(motion_tokens(&prev, &prev, 0.1).unwrap(), Some(vec![]));
    }
}
