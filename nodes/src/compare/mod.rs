//! Comparing step-cache configs side by side: every cell and one shared uncached reference
//! run on the same starting noise for each (seed, class), timed in interleaved rounds that
//! rotate which run goes first, and each cell's images scored against the reference of the
//! same sample.
//!
//! The reference runs `rounds` times per sample however many cells there are, so comparing
//! N configs costs N + 1 runs per sample and round, not 2N.

pub mod labels;
pub mod table;

use crate::cache::hook::{PlainForward, TransformerHook};
use crate::cache::{hook_for_run, CacheSummary, StepCacheConfig, NO_CACHE};
use crate::image::RgbImage;
use crate::metrics::{psnr, ssim};
use crate::models::blocks::BlockTransformer;
use crate::models::vae::images_of;
use crate::models::AnyModel;
use crate::sampling::denoise::{denoise, initial_noise, Flow, SampleSettings};
use crate::sampling::interleave::{bits, warm_up};
use crate::sampling::measure::{load_average_1m, process_cpu_ms, RunTime, Spread};
use crate::sampling::progress::StepProgress;
use crate::sampling::SamplingError;

/// One column of the comparison: a config, or `None` for another uncached run.
#[derive(Debug, Clone)]
pub struct Cell {
    pub config: Option<std::sync::Arc<StepCacheConfig>>,
}

impl Cell {
    /// The config's signature, or `NoCache`.
    pub fn signature(&self) -> String {
        self.config
            .as_ref()
            .map_or(NO_CACHE.to_string(), |c| c.signature())
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    /// Steps, guidance, scheduler; its seed and class are replaced by each sample's.
    pub settings: SampleSettings,
    pub seeds: Vec<u64>,
    pub classes: Vec<u32>,
    pub cells: Vec<Cell>,
    /// Timed rounds per sample (at least 1).
    pub rounds: usize,
}

impl CompareSpec {
    /// The (seed, class) samples, seeds outermost.
    pub fn samples(&self) -> Vec<(u64, u32)> {
        self.seeds
            .iter()
            .flat_map(|&s| self.classes.iter().map(move |&c| (s, c)))
            .collect()
    }
}

/// Which run of the comparison a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Reference,
    Cell(usize),
}

/// Where the comparison is: run `runs_done` of `runs_total`, now on `subject`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareProgress {
    pub subject: Subject,
    pub sample: usize,
    pub round: usize,
    pub step: usize,
    pub steps: usize,
    pub runs_done: usize,
    pub runs_total: usize,
}

/// One sample's outcome for one run kind.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutcome {
    pub seed: u64,
    pub class: u32,
    /// The image of the first round (later rounds must reproduce it).
    pub image: RgbImage,
    /// Against the reference image of the same sample (`None` for the reference itself).
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    /// Cosine distance (1 − cos) between the scene classifier's features of this image and of
    /// the reference image (see [`judge_with_classifier`]); `None` where no classifier fits.
    pub feature_distance: Option<f64>,
}

/// A cell's (or the reference's) results over every sample and round.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub signature: String,
    pub samples: Vec<SampleOutcome>,
    /// Every timed run, samples outermost, rounds inner.
    pub runs: Vec<RunTime>,
    /// Transformer calls and those reused, over all samples (first rounds).
    pub calls: usize,
    pub reused_calls: usize,
    pub block_evaluations: usize,
    pub block_evaluations_uncached: usize,
    /// The work done in block-equivalents (see [`CacheSummary::block_work`]).
    pub block_work: f64,
    /// Every later round gave the first round's image bit for bit.
    pub repeatable: bool,
    /// The share of samples a classifier puts in the same class as the reference image of the
    /// same sample (see [`judge_class_kept`]); `None` where no classifier fits the model.
    pub class_kept: Option<f64>,
}

impl CellResult {
    fn new(signature: String) -> Self {
        CellResult {
            signature,
            samples: Vec::new(),
            runs: Vec::new(),
            calls: 0,
            reused_calls: 0,
            block_evaluations: 0,
            block_evaluations_uncached: 0,
            block_work: 0.0,
            repeatable: true,
            class_kept: None,
        }
    }

    pub fn hit_rate(&self) -> f64 {
        self.reused_calls as f64 / self.calls.max(1) as f64
    }

    /// Block evaluations uncached ÷ the work done: the speedup if only blocks cost time.
    pub fn ideal_speedup(&self) -> f64 {
        if self.block_work <= 0.0 {
            1.0
        } else {
            self.block_evaluations_uncached as f64 / self.block_work
        }
    }

    pub fn wall_ms(&self) -> Option<Spread> {
        Spread::of(&self.runs.iter().map(|r| r.wall_ms).collect::<Vec<_>>())
    }

    /// Process CPU time, when the OS reported it for every run.
    pub fn cpu_ms(&self) -> Option<Spread> {
        let cpu: Option<Vec<f64>> = self.runs.iter().map(|r| r.cpu_ms).collect();
        cpu.as_deref().and_then(Spread::of)
    }

    /// PSNR against the reference over the samples (median and range); `None` for the
    /// reference itself. An identical image counts as `f64::INFINITY`.
    pub fn psnr_db(&self) -> Option<Spread> {
        let v: Option<Vec<f64>> = self.samples.iter().map(|s| s.psnr_db).collect();
        v.as_deref().and_then(Spread::of)
    }

    pub fn ssim(&self) -> Option<Spread> {
        let v: Option<Vec<f64>> = self.samples.iter().map(|s| s.ssim).collect();
        v.as_deref().and_then(Spread::of)
    }

    /// The feature distance to the reference over the samples, where it was judged.
    pub fn feature_distance(&self) -> Option<Spread> {
        let v: Option<Vec<f64>> = self.samples.iter().map(|s| s.feature_distance).collect();
        v.as_deref().and_then(Spread::of)
    }
}

/// What a comparison produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub reference: CellResult,
    pub cells: Vec<CellResult>,
    pub rounds: usize,
    pub load_average: Option<f64>,
}

impl Comparison {
    /// A cell's measured speedup: the reference's median wall time over the cell's, with the
    /// range from the extremes (slowest reference ÷ fastest cell and the other way round).
    pub fn speedup(&self, cell: usize) -> Option<(f64, f64, f64)> {
        let r = self.reference.wall_ms()?;
        let c = self.cells.get(cell)?.wall_ms()?;
        let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
        Some((
            ratio(r.median, c.median),
            ratio(r.min, c.max),
            ratio(r.max, c.min),
        ))
    }
}

/// A classifier: one label per image, or why it could not label them.
pub type Classify<'a> = dyn Fn(&[RgbImage]) -> Result<Vec<u32>, String> + 'a;

/// A feature extractor: one vector per image.
pub type Embed<'a> = dyn Fn(&[RgbImage]) -> Result<Vec<Vec<f32>>, String> + 'a;

/// 1 − cos between two feature vectors (0 for the same direction; 1 when either is zero).
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let n = norm(a) * norm(b);
    if n == 0.0 {
        1.0
    } else {
        (1.0 - dot / n).max(0.0)
    }
}

/// Fills class kept (see [`judge_class_kept`]) and each sample's feature distance to its
/// reference, from one classifier.
pub fn judge_with_classifier(
    comparison: &mut Comparison,
    classify: &Classify,
    embed: &Embed,
) -> Result<(), String> {
    judge_class_kept(comparison, classify)?;
    let images = |cell: &CellResult| -> Vec<RgbImage> {
        cell.samples.iter().map(|s| s.image.clone()).collect()
    };
    let reference = embed(&images(&comparison.reference))?;
    for cell in &mut comparison.cells {
        let features = embed(&images(cell))?;
        if features.len() != reference.len() {
            return Err(format!(
                "features for {} of {} images",
                features.len(),
                reference.len()
            ));
        }
        for (sample, (f, r)) in cell.samples.iter_mut().zip(features.iter().zip(&reference)) {
            sample.feature_distance = Some(cosine_distance(f, r));
        }
    }
    Ok(())
}

/// Fills each cell's `class_kept`: `classify` labels images (the reference's and each cell's,
/// sample by sample), and a cell keeps the class of a sample when its image gets the label the
/// reference image of that sample got.
pub fn judge_class_kept(comparison: &mut Comparison, classify: &Classify) -> Result<(), String> {
    let images: Vec<RgbImage> = comparison
        .reference
        .samples
        .iter()
        .map(|s| s.image.clone())
        .collect();
    let reference = classify(&images)?;
    for cell in &mut comparison.cells {
        let images: Vec<RgbImage> = cell.samples.iter().map(|s| s.image.clone()).collect();
        let labels = classify(&images)?;
        if labels.len() != reference.len() {
            return Err(format!(
                "the classifier labelled {} of {} images",
                labels.len(),
                reference.len()
            ));
        }
        let kept = labels
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a == b)
            .count();
        cell.class_kept = Some(kept as f64 / reference.len().max(1) as f64);
    }
    Ok(())
}

/// The order of round `round` over `n` runs (index 0 is the reference): rotated by one each
/// round, so that no run always goes first or always follows the same one.
pub fn rotation(round: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n.max(1)).collect()
}

/// Runs the comparison (images through `vae` when the model has one). `on_progress` sees every step of every run and may stop it (cancel:
/// `SamplingError::Cancelled`); `on_sample_done` gets the comparison so far after each sample,
/// so that a view can fill in cells as they finish.
pub fn run_comparison(
    model: &AnyModel,
    vae: Option<&crate::models::vae::Vae>,
    spec: &CompareSpec,
    on_progress: &mut dyn FnMut(&CompareProgress) -> Flow,
    on_sample_done: &mut dyn FnMut(&Comparison),
) -> Result<Comparison, SamplingError> {
    let rounds = spec.rounds.max(1);
    let samples = spec.samples();
    if samples.is_empty() {
        return Err(SamplingError::Invalid {
            field: "seeds",
            message: "no (seed, class) to sample: give at least one seed and one class".into(),
        });
    }
    let n = spec.cells.len() + 1;
    let runs_total = samples.len() * rounds * n;
    let mut out = Comparison {
        reference: CellResult::new(NO_CACHE.to_string()),
        cells: spec
            .cells
            .iter()
            .map(|c| CellResult::new(c.signature()))
            .collect(),
        rounds,
        load_average: None,
    };
    // One hook per column, built (and its config validated) once; each run resets it.
    let mut hooks: Vec<Box<dyn TransformerHook<AnyModel>>> = Vec::with_capacity(n);
    hooks.push(Box::new(PlainForward::default()));
    for cell in &spec.cells {
        hooks.push(match &cell.config {
            Some(c) => {
                hook_for_run(c.clone(), model.block_lists(), spec.settings.steps).map_err(|e| {
                    SamplingError::Invalid {
                        field: e.field,
                        message: e.message,
                    }
                })?
            }
            None => Box::new(PlainForward::default()),
        });
    }
    let mut runs_done = 0;
    for (sample_index, &(seed, class)) in samples.iter().enumerate() {
        let settings = SampleSettings {
            seed,
            class_labels: vec![class],
            prompt: None,
            ..spec.settings.clone()
        };
        let noise = initial_noise(model, &settings, model.device())?;
        // Untimed, so that no timed run pays the first call's costs alone.
        if sample_index == 0 {
            warm_up(model, &settings, &noise)?;
        }
        let mut first: Vec<Option<(RgbImage, Vec<u32>)>> = vec![None; n];
        for round in 0..rounds {
            for run in rotation(round, n) {
                let subject = if run == 0 {
                    Subject::Reference
                } else {
                    Subject::Cell(run - 1)
                };
                let mut calls = Vec::new();
                let mut on_step = |step: &StepProgress| {
                    calls.extend(step.calls.iter().cloned());
                    on_progress(&CompareProgress {
                        subject,
                        sample: sample_index,
                        round,
                        step: step.index + 1,
                        steps: step.total,
                        runs_done,
                        runs_total,
                    })
                };
                let cpu_before = process_cpu_ms();
                let result = denoise(model, &settings, &noise, hooks[run].as_mut(), &mut on_step)?;
                let cpu_ms = process_cpu_ms()
                    .zip(cpu_before)
                    .map(|(after, before)| after - before);
                let target = match subject {
                    Subject::Reference => &mut out.reference,
                    Subject::Cell(i) => &mut out.cells[i],
                };
                target.runs.push(RunTime {
                    wall_ms: result.steps.iter().map(|s| s.ms).sum(),
                    cpu_ms,
                });
                let b = bits(&result.sample)?;
                match &first[run] {
                    Some((_, reference_bits)) => target.repeatable &= *reference_bits == b,
                    None => {
                        let summary = CacheSummary::from_records(&target.signature, &calls, 0);
                        target.calls += summary.calls;
                        target.reused_calls += summary.reused_calls;
                        target.block_evaluations += summary.block_evaluations;
                        target.block_evaluations_uncached += summary.block_evaluations_uncached;
                        target.block_work += summary.block_work;
                        let image = images_of(vae, &result.sample)
                            .map_err(|e| SamplingError::Invalid {
                                field: "image",
                                message: e.to_string(),
                            })?
                            .into_iter()
                            .next()
                            .ok_or_else(|| SamplingError::Invalid {
                                field: "image",
                                message: "the sampler produced no image".into(),
                            })?;
                        first[run] = Some((image, b));
                    }
                }
                runs_done += 1;
            }
        }
        let Some((reference_image, _)) = first[0].take() else {
            return Err(SamplingError::Invalid {
                field: "rounds",
                message: "no reference run".into(),
            });
        };
        for (i, slot) in first.iter_mut().enumerate().skip(1) {
            let Some((image, _)) = slot.take() else {
                continue;
            };
            let quality = |e: crate::metrics::MetricError| SamplingError::Invalid {
                field: "image",
                message: e.to_string(),
            };
            let p = psnr(&reference_image, &image).map_err(quality)?;
            let s = ssim(&reference_image, &image).map_err(quality)?;
            out.cells[i - 1].samples.push(SampleOutcome {
                seed,
                class,
                image,
                psnr_db: Some(p),
                ssim: Some(s),
                feature_distance: None,
            });
        }
        out.reference.samples.push(SampleOutcome {
            seed,
            class,
            image: reference_image,
            psnr_db: None,
            ssim: None,
            feature_distance: None,
        });
        out.load_average = load_average_1m();
        on_sample_done(&out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_leads_a_round_in_turn() {
        assert_eq!(rotation(0, 3), vec![0, 1, 2]);
        assert_eq!(rotation(1, 3), vec![1, 2, 0]);
        assert_eq!(rotation(2, 3), vec![2, 0, 1]);
        assert_eq!(rotation(3, 3), vec![0, 1, 2]);
    }
}
