//! Conditional accuracy of a class-conditional model: sample `per_class` images of every class
//! (seeded), let the classifier label them, and report the share labelled as asked.

use super::classifier::SceneClassifier;
use crate::cache::hook::PlainForward;
use crate::image::convert::image_from_tensor;
use crate::image::RgbImage;
use crate::models::blocks::BlockTransformer;
use crate::sampling::denoise::{denoise, initial_noise, CfgMode, Flow, SampleSettings};
use crate::sampling::SamplingError;
use crate::schedulers::{SchedulerConfig, SchedulerKind};

/// How to sample for the check.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalCheck {
    pub per_class: usize,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    /// Seed of the first batch; class `c` uses `seed + c`.
    pub seed: u64,
}

impl Default for ConditionalCheck {
    /// The setting: 25 DPM-Solver++ steps with guidance, 20 samples per class.
    fn default() -> Self {
        ConditionalCheck {
            per_class: 20,
            steps: 25,
            guidance: 4.0,
            scheduler: SchedulerKind::DpmSolverMultistep,
            seed: 1000,
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalReport {
    /// Per class: (samples labelled as asked, samples drawn).
    pub per_class: Vec<(usize, usize)>,
    /// Every generated image, class by class.
    pub images: Vec<Vec<RgbImage>>,
}

impl ConditionalReport {
    pub fn accuracy(&self) -> f64 {
        let (hit, n) = self
            .per_class
            .iter()
            .fold((0, 0), |(h, n), &(ch, cn)| (h + ch, n + cn));
        hit as f64 / n.max(1) as f64
    }
}

/// Samples every class of `model` and classifies the results. `on_class` sees each finished
/// class (index, correct, drawn).
pub fn conditional_accuracy<M: BlockTransformer + ?Sized>(
    model: &M,
    classifier: &SceneClassifier,
    check: &ConditionalCheck,
    on_class: &mut dyn FnMut(usize, usize, usize),
) -> Result<ConditionalReport, SamplingError> {
    let classes = model.latent().classes.unwrap_or(0);
    let mut report = ConditionalReport {
        per_class: Vec::with_capacity(classes),
        images: Vec::with_capacity(classes),
    };
    let candle = |context| move |source| SamplingError::Candle { context, source };
    for class in 0..classes {
        let settings = SampleSettings {
            class_labels: vec![class as u32; check.per_class],
            prompt: None,
            seed: check.seed + class as u64,
            steps: check.steps,
            guidance: check.guidance,
            scheduler: check.scheduler,
            scheduler_config: SchedulerConfig::default(),
            size: None,
            cfg_mode: CfgMode::Batched,
        };
        let noise = initial_noise(model, &settings, model.device())?;
        let result = denoise(
            model,
            &settings,
            &noise,
            &mut PlainForward::default(),
            &mut |_| Flow::Continue,
        )?;
        let images = image_from_tensor(&result.sample).map_err(|e| SamplingError::Invalid {
            field: "image",
            message: e.to_string(),
        })?;
        let labels = classifier
            .classify(&images, model.device())
            .map_err(candle("classifying samples"))?;
        let correct = labels.iter().filter(|&&l| l as usize == class).count();
        on_class(class, correct, labels.len());
        report.per_class.push((correct, labels.len()));
        report.images.push(images);
    }
    Ok(report)
}
