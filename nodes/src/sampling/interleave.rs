//! The Sampler's `baseline`: after a warm-up, an uncached twin and the cached run are timed
//! in interleaved rounds, the order turning each round so that neither always goes first. The
//! first cached round is the run the user sees (its steps stream live); the others only report
//! progress, and must reproduce its image bit for bit.

use super::denoise::{
    denoise_with_preview, Flow, LatentPreview, Preview, SampleResult, SampleSettings,
};
use super::measure::{process_cpu_ms, RunTime};
use super::SamplingError;
use crate::cache::hook::{PlainForward, TransformerHook};
use crate::models::blocks::{self, BlockTransformer, Conditioning};
use crate::models::AnyModel;
use crate::sampling::progress::{MeasurePhase, MeasureProgress, StepProgress};
use candle_core::{DType, Tensor};

/// What the rounds gave.
pub struct Interleaved {
    /// The first cached round: the run the user saw.
    pub live: SampleResult,
    /// The cache's peak bytes in that run.
    pub live_peak_bytes: usize,
    /// The first uncached round (the reference image).
    pub baseline: SampleResult,
    /// Every round's times, in round order.
    pub baseline_runs: Vec<RunTime>,
    pub cached_runs: Vec<RunTime>,
    /// Every round gave the same final sample, bit for bit, as the first round of its kind.
    pub repeatable: bool,
}

/// The order of round `round` (0-based): cached first in even rounds, so the first run the
/// user waits for is the live one.
pub fn round_order(round: usize) -> [MeasurePhase; 2] {
    if round.is_multiple_of(2) {
        [MeasurePhase::Cached, MeasurePhase::Baseline]
    } else {
        [MeasurePhase::Baseline, MeasurePhase::Cached]
    }
}

fn candle(context: &'static str) -> impl FnOnce(candle_core::Error) -> SamplingError {
    move |source| SamplingError::Candle { context, source }
}

/// One uncached forward on a batch of the run's largest shape, so that no timed run pays the
/// first-call costs (allocations, kernel loading) alone.
pub(crate) fn warm_up(
    model: &AnyModel,
    settings: &SampleSettings,
    noise: &Tensor,
) -> Result<(), SamplingError> {
    let fail = candle("warm-up forward");
    let (x, cond) = match &settings.prompt {
        // A prompt: one call as the loop makes it.
        Some(p) => {
            let g = model.embeds_guidance().then_some(settings.guidance);
            let cond = p
                .embeds
                .conditioning(settings.batch(), g)
                .map_err(candle("warm-up forward"))?;
            (noise.clone(), Conditioning::Text(cond))
        }
        // Classes: a CFG-sized batch.
        None => {
            let batch = 2 * settings.class_labels.len();
            let labels = Tensor::zeros(batch, DType::U32, noise.device())
                .map_err(candle("warm-up forward"))?;
            let x = Tensor::cat(&[noise, noise], 0).map_err(candle("warm-up forward"))?;
            (x, Conditioning::Class(labels))
        }
    };
    let n = cond.batch().map_err(candle("warm-up forward"))?;
    let t = Tensor::full(500f32, n, noise.device()).map_err(candle("warm-up forward"))?;
    blocks::forward(model, &x, &t, &cond).map_err(fail)?;
    model
        .device()
        .synchronize()
        .map_err(candle("warm-up forward"))
}

/// The final sample's values, to tell two runs apart bit for bit.
pub(crate) fn bits(sample: &Tensor) -> Result<Vec<u32>, SamplingError> {
    let values = sample
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle("comparing rounds"))?;
    Ok(values.into_iter().map(f32::to_bits).collect())
}

/// The cached side of interleaved rounds: its hook, and the previews of the round the user
/// sees.
pub struct CachedRun<'a> {
    pub hook: &'a mut dyn TransformerHook<AnyModel>,
    pub live_preview: &'a mut dyn Preview,
}

/// Runs `rounds` (at least 1) interleaved rounds of the uncached twin and the cached run
/// through `cached.hook`. The first cached round calls `on_live_step` on each step; every
/// step of every run calls `on_progress`. Either may stop the loop (cancel).
pub fn run_interleaved(
    model: &AnyModel,
    settings: &SampleSettings,
    noise: &Tensor,
    cached: CachedRun<'_>,
    rounds: usize,
    on_live_step: &mut dyn FnMut(&StepProgress) -> Flow,
    on_progress: &mut dyn FnMut(&MeasureProgress) -> Flow,
) -> Result<Interleaved, SamplingError> {
    let rounds = rounds.max(1);
    let CachedRun {
        hook: cached,
        live_preview,
    } = cached;
    warm_up(model, settings, noise)?;
    let mut plain = PlainForward::default();
    let mut first: [Option<(SampleResult, Vec<u32>)>; 2] = [None, None];
    let mut live_peak_bytes = 0;
    let mut times: [Vec<RunTime>; 2] = [Vec::new(), Vec::new()];
    let mut repeatable = true;
    let mut runs_done = 0;
    for round in 0..rounds {
        for phase in round_order(round) {
            let live = phase == MeasurePhase::Cached && round == 0;
            let hook: &mut dyn TransformerHook<AnyModel> = match phase {
                MeasurePhase::Cached => &mut *cached,
                MeasurePhase::Baseline => &mut plain,
            };
            let mut on_step = |step: &StepProgress| {
                if live && on_live_step(step) == Flow::Stop {
                    return Flow::Stop;
                }
                on_progress(&MeasureProgress {
                    phase,
                    round: round + 1,
                    rounds,
                    step: step.index + 1,
                    steps: step.total,
                    runs_done,
                })
            };
            let cpu_before = process_cpu_ms();
            let mut quiet = LatentPreview::default();
            let preview: &mut dyn Preview = if live { &mut *live_preview } else { &mut quiet };
            let result = denoise_with_preview(model, settings, noise, hook, preview, &mut on_step)?;
            let cpu_ms = process_cpu_ms()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            if live {
                live_peak_bytes = hook.peak_bytes();
            }
            let kind = match phase {
                MeasurePhase::Baseline => 0,
                MeasurePhase::Cached => 1,
            };
            times[kind].push(RunTime {
                wall_ms: result.steps.iter().map(|s| s.ms).sum(),
                cpu_ms,
            });
            match &first[kind] {
                Some((_, reference)) => repeatable &= *reference == bits(&result.sample)?,
                None => {
                    let b = bits(&result.sample)?;
                    first[kind] = Some((result, b));
                }
            }
            runs_done += 1;
        }
    }
    let [Some((baseline, _)), Some((live, _))] = first else {
        return Err(SamplingError::Invalid {
            field: "baseline_rounds",
            message: "no round ran".into(),
        });
    };
    let [baseline_runs, cached_runs] = times;
    Ok(Interleaved {
        live,
        live_peak_bytes,
        baseline,
        baseline_runs,
        cached_runs,
        repeatable,
    })
}
