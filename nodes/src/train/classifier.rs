//! Trains the quality classifier on the dataset generator's images: cross-entropy, AdamW, mild
//! Gaussian pixel noise so slightly noisy generated images are judged by content, and a
//! held-out set from a seed stream training never draws from.

use super::batch::scene_batch;
use super::optim::{AdamW, AdamWConfig};
use super::progress::{warmup_constant_lr, RunningMean, TrainFlow, TrainProgress};
use super::TrainError;
use crate::eval::classifier::{SceneClassifier, IMAGE_SIZE};
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// The seed of the held-out stream (never used for training).
pub const HELDOUT_SEED: u64 = 0x5EED_4E1D_0A7E_0001;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassifierTrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Largest σ of the Gaussian noise added to training images (drawn per image in [0, σ]).
    pub max_noise: f64,
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        ClassifierTrainConfig {
            steps: 1500,
            batch: 64,
            lr: 2e-3,
            warmup_steps: 100,
            max_noise: 0.1,
            seed: 1,
        }
    }
}

/// Seeded He-normal weights (zero biases), sorted by name.
fn init_params(seed: u64, device: &Device) -> Result<Vec<(String, Var)>, TrainError> {
    let mut rng = Rng::new(seed);
    SceneClassifier::tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let std = if shape.len() > 1 {
                (2.0 / fan_in as f64).sqrt()
            } else {
                0.0
            };
            let t = (rng
                .randn(shape, device)
                .map_err(TrainError::candle("init"))?
                * std)
                .map_err(TrainError::candle("init"))?;
            let var = Var::from_tensor(&t).map_err(TrainError::candle("init"))?;
            Ok((name, var))
        })
        .collect()
}

/// Trains a classifier from scratch; returns its weights by name.
pub fn train_classifier(
    config: &ClassifierTrainConfig,
    device: &Device,
    on_progress: &mut dyn FnMut(&TrainProgress) -> TrainFlow,
) -> Result<HashMap<String, Tensor>, TrainError> {
    let params = init_params(config.seed, device)?;
    let varmap = VarMap::new();
    varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Invalid("weight map lock poisoned".into()))?
        .extend(params.iter().cloned());
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = SceneClassifier::new(vb).map_err(TrainError::candle("building classifier"))?;
    let adamw = AdamWConfig {
        weight_decay: 1e-4,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(params.clone(), adamw).map_err(TrainError::candle("optimiser"))?;
    let mut loss_avg = RunningMean::new(50);
    let mut speed = RunningMean::new(20);
    let mut elapsed = 0.0;
    for step in 0..config.steps {
        let started = Instant::now();
        let err = |what: &'static str| TrainError::candle(format!("step {step}: {what}"));
        let batch = scene_batch(config.seed, step, config.batch, IMAGE_SIZE, device)
            .map_err(err("drawing batch"))?;
        let mut rng = Rng::new(config.seed ^ 0xC1A5 ^ step.wrapping_mul(0x9E37_79B9));
        let sigmas: Vec<f32> = (0..config.batch)
            .map(|_| (rng.uniform() * config.max_noise) as f32)
            .collect();
        let sigmas =
            Tensor::from_vec(sigmas, (config.batch, 1, 1, 1), device).map_err(err("noise"))?;
        let noise = rng
            .randn(batch.images.shape(), device)
            .map_err(err("noise"))?;
        let x = (&batch.images + noise.broadcast_mul(&sigmas).map_err(err("noise"))?)
            .map_err(err("noise"))?;
        let logits = model.forward(&x).map_err(err("forward"))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels).map_err(err("loss"))?;
        let grads = loss.backward().map_err(err("backward"))?;
        let lr = warmup_constant_lr(step, config.warmup_steps, config.lr);
        let grad_norm = opt.step(&grads, lr).map_err(err("optimiser"))?;
        let loss = loss.to_scalar::<f32>().map_err(err("loss"))? as f64;
        let secs = started.elapsed().as_secs_f64();
        elapsed += secs;
        let step_secs = speed.push(secs);
        let progress = TrainProgress {
            step: step + 1,
            total_steps: config.steps,
            loss,
            loss_avg: loss_avg.push(loss),
            lr,
            grad_norm,
            images_per_sec: config.batch as f64 / step_secs.max(1e-9),
            elapsed_secs: elapsed,
            eta_secs: step_secs * (config.steps - step - 1) as f64,
        };
        if on_progress(&progress) == TrainFlow::Stop {
            return Err(TrainError::Cancelled);
        }
    }
    Ok(params
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().detach()))
        .collect())
}

/// Accuracy on `per_class` held-out images of every class (clean, as the generator draws
/// them), overall and per class.
pub fn heldout_accuracy(
    classifier: &SceneClassifier,
    per_class: usize,
    device: &Device,
) -> Result<(f64, Vec<f64>), TrainError> {
    let classes = crate::eval::classifier::NUM_CLASSES;
    let mut correct = vec![0usize; classes];
    let mut seen = vec![0usize; classes];
    let mut step = 0u64;
    while seen.iter().any(|&n| n < per_class) {
        let batch = scene_batch(HELDOUT_SEED, step, 100, IMAGE_SIZE, device)
            .map_err(TrainError::candle("held-out batch"))?;
        let predicted = classifier
            .predict(&batch.images)
            .map_err(TrainError::candle("classifying held-out images"))?;
        for (&label, &p) in batch.label_values.iter().zip(&predicted) {
            let l = label as usize;
            if seen[l] < per_class {
                seen[l] += 1;
                correct[l] += usize::from(p == label);
            }
        }
        step += 1;
    }
    let per: Vec<f64> = correct
        .iter()
        .zip(&seen)
        .map(|(&c, &n)| c as f64 / n.max(1) as f64)
        .collect();
    let total = correct.iter().sum::<usize>() as f64 / seen.iter().sum::<usize>().max(1) as f64;
    Ok((total, per))
}
