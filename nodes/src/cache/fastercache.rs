//! FasterCache (diffusers 0.42.1 `hooks/faster_cache.py`, ALGORITHMS.md §2.4) as a
//! [`TransformerHook`]: two rules on one counter each.
//!
//! * **CFG-Cache** (the denoiser): inside its window, on calls that are not a multiple of
//!   `unconditional_batch_skip_range`, only the conditional half of the batched CFG call runs;
//!   the unconditional output is rebuilt in the frequency domain from the conditional one and
//!   the low/high-frequency differences of the last full call, each weighted (and compounding)
//!   by `alpha_*` inside its own window. A centred disk of radius `min(H, W) // 5` is the low
//!   band; the 2-D DFT runs as products with cosine and sine matrices, in f32.
//! * **Attention extrapolation**: inside its window, every attention module of a call that
//!   runs the conditional half only (or of every call, for guidance-distilled models such as
//!   FLUX.1-dev), except on multiples of `spatial_attention_block_skip_range`, returns
//!   `y₁ + (y₁ − y₂)·w` from its last two outputs instead of running; approximations are
//!   stored too.
//!
//! Windows are exclusive (`lo < t < hi`) on the scheduler timestep. State is per transformer
//! and per module, not per CFG branch, as in diffusers; the batch is this project's
//! `[cond; uncond]` (diffusers assumes `[uncond; cond]`; the halves are named, not positional).

use super::config::{invalid, CacheConfigError, StepCacheConfig};
use super::hook::{CallInfo, TransformerHook};
use super::record::{CallRecord, Decision, Reason};
use crate::models::blocks::{
    run_order, AttentionHook, AttentionOutput, BlockAt, BlockTransformer, Conditioning, Streams,
};
use candle_core::{DType, Device, Result, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// FasterCache's settings (diffusers' `FasterCacheConfig` names; the attention weight is the
/// constant its default callback returns).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FasterCacheParams {
    /// `spatial_attention_block_skip_range`: attention computes on multiples of N and is
    /// extrapolated between; 0 = no attention approximation (diffusers' `None`).
    pub spatial_attention_block_skip_range: usize,
    pub spatial_attention_timestep_skip_range: (f64, f64),
    pub low_frequency_weight_update_timestep_range: (f64, f64),
    pub high_frequency_weight_update_timestep_range: (f64, f64),
    pub alpha_low_frequency: f64,
    pub alpha_high_frequency: f64,
    /// The unconditional half runs on multiples of N; 0 = never skipped.
    pub unconditional_batch_skip_range: usize,
    pub unconditional_batch_timestep_skip_range: (f64, f64),
    /// `w` in `y₁ + (y₁ − y₂)·w`.
    pub attention_weight: f64,
}

impl Default for FasterCacheParams {
    /// diffusers' defaults.
    fn default() -> Self {
        FasterCacheParams {
            spatial_attention_block_skip_range: 2,
            spatial_attention_timestep_skip_range: (-1.0, 681.0),
            low_frequency_weight_update_timestep_range: (99.0, 901.0),
            high_frequency_weight_update_timestep_range: (-1.0, 301.0),
            alpha_low_frequency: 1.1,
            alpha_high_frequency: 1.1,
            unconditional_batch_skip_range: 5,
            unconditional_batch_timestep_skip_range: (-1.0, 641.0),
            attention_weight: 0.5,
        }
    }
}

impl FasterCacheParams {
    pub fn validate(&self) -> std::result::Result<(), CacheConfigError> {
        let windows = [
            (
                "spatial_attention_timestep_skip_range",
                self.spatial_attention_timestep_skip_range,
            ),
            (
                "low_frequency_weight_update_timestep_range",
                self.low_frequency_weight_update_timestep_range,
            ),
            (
                "high_frequency_weight_update_timestep_range",
                self.high_frequency_weight_update_timestep_range,
            ),
            (
                "unconditional_batch_timestep_skip_range",
                self.unconditional_batch_timestep_skip_range,
            ),
        ];
        for (field, (lo, hi)) in windows {
            if !lo.is_finite() || !hi.is_finite() || lo >= hi {
                return Err(invalid(
                    field,
                    "two timesteps, low then high (the rule acts strictly between them)",
                ));
            }
        }
        for (field, v) in [
            ("alpha_low_frequency", self.alpha_low_frequency),
            ("alpha_high_frequency", self.alpha_high_frequency),
            ("attention_weight", self.attention_weight),
        ] {
            if !v.is_finite() {
                return Err(invalid(field, "must be a number"));
            }
        }
        Ok(())
    }
}

fn inside((lo, hi): (f64, f64), t: f64) -> bool {
    lo < t && t < hi
}

/// The 2-D DFT over the last two dims as matrix products (cos − i·sin), with the centred-disk
/// low-pass mask of FasterCache's `_split_low_high_freq`.
struct Fourier {
    h: usize,
    w: usize,
    cos_h: Tensor,
    sin_h: Tensor,
    cos_w: Tensor,
    sin_w: Tensor,
    /// 1 on the low band, 0 elsewhere, in unshifted frequency order: `[H, W]`.
    low: Tensor,
    high: Tensor,
}

/// A complex tensor as its real and imaginary parts.
#[derive(Debug, Clone)]
struct Complex {
    re: Tensor,
    im: Tensor,
}

impl Complex {
    fn add(&self, other: &Complex) -> Result<Complex> {
        Ok(Complex {
            re: (&self.re + &other.re)?,
            im: (&self.im + &other.im)?,
        })
    }

    fn sub(&self, other: &Complex) -> Result<Complex> {
        Ok(Complex {
            re: (&self.re - &other.re)?,
            im: (&self.im - &other.im)?,
        })
    }

    fn scale(&self, by: f64) -> Result<Complex> {
        Ok(Complex {
            re: (&self.re * by)?,
            im: (&self.im * by)?,
        })
    }

    fn mask(&self, mask: &Tensor) -> Result<Complex> {
        Ok(Complex {
            re: self.re.broadcast_mul(mask)?,
            im: self.im.broadcast_mul(mask)?,
        })
    }
}

fn dft(n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let angle = |j: usize, k: usize| 2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
    let cos: Vec<f32> = (0..n * n)
        .map(|i| angle(i / n, i % n).cos() as f32)
        .collect();
    let sin: Vec<f32> = (0..n * n)
        .map(|i| angle(i / n, i % n).sin() as f32)
        .collect();
    Ok((
        Tensor::from_vec(cos, (n, n), device)?,
        Tensor::from_vec(sin, (n, n), device)?,
    ))
}

impl Fourier {
    fn new(h: usize, w: usize, device: &Device) -> Result<Self> {
        let (cos_h, sin_h) = dft(h, device)?;
        let (cos_w, sin_w) = dft(w, device)?;
        // After fftshift frequency 0 sits at (H/2, W/2); the disk is r = min(H, W)/5 around it,
        // boundary included. In unshifted order, index k is the signed frequency k (or k − n).
        let r = (h.min(w) / 5) as i64;
        let signed = |k: usize, n: usize| {
            let (k, n) = (k as i64, n as i64);
            if k < n - n / 2 {
                k
            } else {
                k - n
            }
        };
        let low: Vec<f32> = (0..h * w)
            .map(|i| {
                let (fy, fx) = (signed(i / w, h), signed(i % w, w));
                if fx * fx + fy * fy <= r * r {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let low = Tensor::from_vec(low, (h, w), device)?;
        let high = (1.0 - &low)?;
        Ok(Fourier {
            h,
            w,
            cos_h,
            sin_h,
            cos_w,
            sin_w,
            low,
            high,
        })
    }

    /// `fft2` of a real `[.., H, W]` tensor.
    fn forward(&self, x: &Tensor) -> Result<Complex> {
        let ch_x = self.cos_h.broadcast_matmul(x)?;
        let sh_x = self.sin_h.broadcast_matmul(x)?;
        let re = (ch_x.broadcast_matmul(&self.cos_w)? - sh_x.broadcast_matmul(&self.sin_w)?)?;
        let im =
            (ch_x.broadcast_matmul(&self.sin_w)? + sh_x.broadcast_matmul(&self.cos_w)?)?.neg()?;
        Ok(Complex { re, im })
    }

    /// The real part of `ifft2`.
    fn inverse_real(&self, z: &Complex) -> Result<Tensor> {
        let pr = (self.cos_h.broadcast_matmul(&z.re)? - self.sin_h.broadcast_matmul(&z.im)?)?;
        let pi = (self.cos_h.broadcast_matmul(&z.im)? + self.sin_h.broadcast_matmul(&z.re)?)?;
        let out = (pr.broadcast_matmul(&self.cos_w)? - pi.broadcast_matmul(&self.sin_w)?)?;
        out / (self.h * self.w) as f64
    }

    /// The low and high bands of `x`'s spectrum.
    fn split(&self, x: &Tensor) -> Result<(Complex, Complex)> {
        let spec = self.forward(x)?;
        Ok((spec.mask(&self.low)?, spec.mask(&self.high)?))
    }
}

/// One attention module's state.
#[derive(Debug, Default)]
struct ModuleState {
    iteration: usize,
    /// The batch of its first call: the full CFG batch.
    full_batch: Option<usize>,
    /// The last two outputs (older, newer), conditional halves.
    cache: Option<[AttentionOutput; 2]>,
}

/// What the modules did on one call.
#[derive(Debug, Default)]
struct Tally {
    approximated: usize,
    saved_work: f64,
}

/// The per-module rule, run around each attention module of a call.
struct Extrapolate<'a, M: BlockTransformer + ?Sized> {
    params: &'a FasterCacheParams,
    timestep: f64,
    distilled: bool,
    modules: &'a mut BTreeMap<BlockAt, ModuleState>,
    tally: Tally,
    model: &'a M,
    streams: Option<Streams>,
}

impl<M: BlockTransformer + ?Sized> AttentionHook for Extrapolate<'_, M> {
    fn attention(
        &mut self,
        at: BlockAt,
        compute: &mut dyn FnMut() -> Result<AttentionOutput>,
    ) -> Result<AttentionOutput> {
        let batch = self.streams.as_ref().map_or(Ok(0), |s| s.hidden.dim(0))?;
        let state = self.modules.entry(at).or_default();
        let full = *state.full_batch.get_or_insert(batch);
        let n = self.params.spatial_attention_block_skip_range;
        let skip = inside(
            self.params.spatial_attention_timestep_skip_range,
            self.timestep,
        ) && !(state.iteration > 0 && state.iteration.is_multiple_of(n))
            && (self.distilled || full != batch);
        let output = if skip {
            let Some([older, newer]) = &state.cache else {
                candle_core::bail!(
                    "fastercache: the first call (t = {}) falls inside the attention window, so \
                     nothing is stored to extrapolate from; end the window below it",
                    self.timestep
                );
            };
            // Cached outputs are conditional halves; a full-size one is cut to its first half.
            let half = |t: &Tensor| -> Result<Tensor> {
                if t.dim(0)? != batch {
                    t.narrow(0, 0, batch)
                } else {
                    Ok(t.clone())
                }
            };
            let w = self.params.attention_weight;
            let out = newer
                .map(half)?
                .zip(&older.map(half)?, |y1, y2| y1 + ((y1 - y2)? * w)?)?;
            self.tally.approximated += 1;
            if let Some(s) = &self.streams {
                self.tally.saved_work += self.model.attention_share(at, s);
            }
            out
        } else {
            compute()?
        };
        let stored = if !self.distilled && output.hidden.dim(0)? == full && full >= 2 {
            output.map(|t| t.narrow(0, 0, full / 2))?
        } else {
            output.clone()
        };
        state.cache = Some(match state.cache.take() {
            None => [stored.clone(), stored],
            Some([_, newer]) => [newer, stored],
        });
        state.iteration += 1;
        Ok(output)
    }
}

/// The frequency-domain state of the CFG rule.
#[derive(Debug, Default)]
struct Deltas {
    low: Option<Complex>,
    high: Option<Complex>,
}

/// The FasterCache hook; one per sampler run.
pub struct FasterCache {
    params: FasterCacheParams,
    iteration: usize,
    deltas: Deltas,
    fourier: Option<Fourier>,
    modules: BTreeMap<BlockAt, ModuleState>,
    records: Vec<CallRecord>,
    peak_bytes: usize,
}

impl std::fmt::Debug for FasterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FasterCache")
            .field("params", &self.params)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl FasterCache {
    pub fn new(config: Arc<StepCacheConfig>) -> std::result::Result<Self, CacheConfigError> {
        config.validate()?;
        config.fastercache.validate()?;
        Ok(FasterCache {
            params: config.fastercache.clone(),
            iteration: 0,
            deltas: Deltas::default(),
            fourier: None,
            modules: BTreeMap::new(),
            records: Vec::new(),
            peak_bytes: 0,
        })
    }

    /// The DFT tables for `h × w` outputs (built on the first call of that size).
    fn fourier(&mut self, h: usize, w: usize, device: &Device) -> Result<Fourier> {
        match self.fourier.take() {
            Some(f) if f.h == h && f.w == w && f.low.device().same_device(device) => Ok(f),
            _ => Fourier::new(h, w, device),
        }
    }
}

fn complex_bytes(c: &Option<Complex>) -> usize {
    c.as_ref().map_or(0, |c| {
        (c.re.elem_count() + c.im.elem_count()) * c.re.dtype().size_in_bytes()
    })
}

impl<M: BlockTransformer + ?Sized> TransformerHook<M> for FasterCache {
    fn reset(&mut self) {
        self.iteration = 0;
        self.deltas = Deltas::default();
        self.modules.clear();
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
        let distilled = model.embeds_guidance();
        let batch = x.dim(0)?;
        if !distilled && (!info.batched_cfg || batch < 2 || batch % 2 != 0) {
            candle_core::bail!(
                "fastercache approximates the unconditional half of a batched CFG call: set the \
                 Sampler's cfg_mode to batched and guidance above 1"
            );
        }
        let t = info.timestep;
        let p = self.params.clone();
        let skip_uncond = !distilled
            && p.unconditional_batch_skip_range > 0
            && self.iteration > 0
            && inside(p.unconditional_batch_timestep_skip_range, t)
            && !self
                .iteration
                .is_multiple_of(p.unconditional_batch_skip_range);
        let (x_run, t_run, c_run) = if skip_uncond {
            let half = batch / 2;
            (
                x.narrow(0, 0, half)?,
                timesteps.narrow(0, 0, half)?,
                cond.narrow(0, half)?,
            )
        } else {
            (x.clone(), timesteps.clone(), cond.clone())
        };
        let order = run_order(model.block_lists());
        let (mut streams, call) = model.embed(&x_run, &t_run, &c_run)?;
        let mut rule = Extrapolate {
            params: &p,
            timestep: t,
            distilled,
            modules: &mut self.modules,
            tally: Tally::default(),
            model,
            streams: None,
        };
        for &at in &order {
            if p.spatial_attention_block_skip_range == 0 {
                streams = model.block(at, &streams, &call)?;
                continue;
            }
            rule.streams = Some(streams.clone());
            streams = match model.block_with_attention(at, &streams, &call, &mut rule)? {
                Some(s) => s,
                None => candle_core::bail!(
                    "fastercache: this model family exposes no attention seam to extrapolate"
                ),
            };
        }
        let tally = rule.tally;
        let out = model.finish(&streams, &call)?;
        let output = if distilled {
            out
        } else {
            let (_, _, h, w) = out.dims4()?;
            let dtype = out.dtype();
            let device = out.device().clone();
            let fourier = self.fourier(h, w, &device)?;
            let output = if skip_uncond {
                let (Some(low), Some(high)) = (&self.deltas.low, &self.deltas.high) else {
                    candle_core::bail!("fastercache: no frequency deltas stored yet");
                };
                let w_low = if inside(p.low_frequency_weight_update_timestep_range, t) {
                    p.alpha_low_frequency
                } else {
                    1.0
                };
                let w_high = if inside(p.high_frequency_weight_update_timestep_range, t) {
                    p.alpha_high_frequency
                } else {
                    1.0
                };
                let low = low.scale(w_low)?;
                let high = high.scale(w_high)?;
                let (low_c, high_c) = fourier.split(&out.to_dtype(DType::F32)?)?;
                let spectrum = low.add(&low_c)?.add(&high.add(&high_c)?)?;
                let uncond = fourier.inverse_real(&spectrum)?.to_dtype(dtype)?;
                self.deltas = Deltas {
                    low: Some(low),
                    high: Some(high),
                };
                Tensor::cat(&[&out, &uncond], 0)?
            } else {
                let half = batch / 2;
                let f32_out = out.to_dtype(DType::F32)?;
                let (low_c, high_c) = fourier.split(&f32_out.narrow(0, 0, half)?)?;
                let (low_u, high_u) = fourier.split(&f32_out.narrow(0, half, half)?)?;
                self.deltas = Deltas {
                    low: Some(low_u.sub(&low_c)?),
                    high: Some(high_u.sub(&high_c)?),
                };
                out
            };
            self.fourier = Some(fourier);
            output
        };
        self.iteration += 1;
        model.device().synchronize()?;
        let held = self
            .modules
            .values()
            .filter_map(|m| m.cache.as_ref())
            .map(|[a, b]| a.bytes() + b.bytes())
            .sum::<usize>()
            + complex_bytes(&self.deltas.low)
            + complex_bytes(&self.deltas.high);
        self.peak_bytes = self.peak_bytes.max(held);
        let blocks = order.len() as f64;
        let share = if skip_uncond { 0.5 } else { 1.0 };
        let reused = skip_uncond || tally.approximated > 0;
        self.records.push(CallRecord {
            step: info.step_index,
            branch: info.branch,
            decision: if reused {
                Decision::Reused
            } else {
                Decision::Computed
            },
            reason: if reused {
                Reason::ScheduleReuse
            } else if self.iteration == 1 {
                Reason::NoReference
            } else {
                Reason::ScheduleCompute
            },
            diff: None,
            threshold: None,
            blocks_run: order.len(),
            blocks_total: order.len(),
            ms: started.elapsed().as_secs_f64() * 1e3,
            work: reused.then_some((blocks - tally.saved_work) * share),
            attention_reused: tally.approximated,
            pattern: None,
        });
        Ok(output)
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

    #[test]
    fn the_dft_inverts_and_the_bands_add_up() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 16.0 * 12.0, &dev)
            .unwrap()
            .reshape((2, 1, 16, 12))
            .unwrap()
            .sin()
            .unwrap();
        let f = Fourier::new(16, 12, &dev).unwrap();
        let back = f.inverse_real(&f.forward(&x).unwrap()).unwrap();
        let err = (back - &x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-5, "{err}");
        // r = 12 / 5 = 2: the disk around frequency 0 holds 13 bins (|f|² ≤ 4).
        let bins = f.low.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(bins, 13.0);
        let (low, high) = f.split(&x).unwrap();
        let whole = f.inverse_real(&low.add(&high).unwrap()).unwrap();
        let err = (whole - &x)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-5, "{err}");
    }
}
