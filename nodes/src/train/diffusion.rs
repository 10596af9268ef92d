//! Trains a class-conditional DiT on the scene dataset with the DiT recipe: ε-prediction MSE at
//! uniform timesteps of the linear-β schedule, the null class dropped in so classifier-free
//! guidance works, AdamW, an EMA of the weights, checkpoints that resume the exact run.

use super::batch::scene_batch;
use super::checkpoint;
use super::init::init_dit_tensors;
use super::optim::{AdamW, AdamWConfig, Ema};
use super::progress::{warmup_constant_lr, RunningMean, TrainFlow, TrainProgress};
use super::TrainError;
use crate::models::dit::block::Kernels;
use crate::models::dit::{DiT, DiTConfig};
use crate::models::loading::save_dit;
use crate::rng::Rng;
use crate::schedulers::table::NoiseTable;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Everything that defines a training run; stored in its checkpoint so a resume continues the
/// same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiffusionTrainConfig {
    pub model: DiTConfig,
    pub steps: u64,
    pub batch: usize,
    /// Learning rate after the linear warm-up (constant from then on).
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub ema_decay: f64,
    /// Probability that a sample's label is replaced by the null class.
    pub null_class_prob: f64,
    /// Min-SNR-γ loss weighting (Hang et al. 2023): each timestep's ε-loss is weighted by
    /// `min(SNR, γ) / SNR`, so the many nearly clean timesteps stop dominating the gradient.
    /// `None` = plain MSE.
    pub min_snr_gamma: Option<f64>,
    pub seed: u64,
    pub checkpoint_every: u64,
}

impl Default for DiffusionTrainConfig {
    fn default() -> Self {
        DiffusionTrainConfig {
            model: crate::models::builtin::scenes_dit_config(),
            steps: 6000,
            batch: 32,
            lr: 8e-4,
            warmup_steps: 200,
            weight_decay: 0.01,
            ema_decay: 0.998,
            null_class_prob: 0.1,
            min_snr_gamma: Some(5.0),
            seed: 0,
            checkpoint_every: 250,
        }
    }
}

impl DiffusionTrainConfig {
    pub fn check(&self) -> Result<(), TrainError> {
        self.model.check().map_err(TrainError::Invalid)?;
        let bad = |m: &str| Err(TrainError::Invalid(m.to_string()));
        if self.steps == 0 || self.batch == 0 {
            return bad("steps and batch must be positive");
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return bad("lr must be positive");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.null_class_prob) {
            return bad("null_class_prob must be in [0, 1)");
        }
        if self.model.out_channels() != self.model.in_channels {
            return bad("training predicts ε only: out_channels must equal in_channels");
        }
        Ok(())
    }
}

/// One logged step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    pub step: u64,
    pub loss: f64,
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    config: DiffusionTrainConfig,
    step: u64,
    ema_updates: u64,
    elapsed_secs: f64,
    losses: Vec<LossPoint>,
}

pub struct DiffusionTrainer {
    config: DiffusionTrainConfig,
    dit: DiT,
    params: Vec<(String, Var)>,
    opt: AdamW,
    ema: Ema,
    /// `sqrt(ᾱ_t)` and `sqrt(1 − ᾱ_t)` for t = 0..1000.
    signal: Vec<f32>,
    noise: Vec<f32>,
    /// Loss weight per timestep (all 1 without Min-SNR weighting).
    loss_weight: Vec<f32>,
    device: Device,
    step: u64,
    elapsed_secs: f64,
    losses: Vec<LossPoint>,
}

impl DiffusionTrainer {
    /// A fresh run: weights initialised from `config.seed`.
    pub fn new(config: DiffusionTrainConfig, device: &Device) -> Result<Self, TrainError> {
        config.check()?;
        let tensors = init_dit_tensors(&config.model, config.seed, device)
            .map_err(TrainError::candle("initialising weights"))?;
        Self::from_tensors(config, tensors, device)
    }

    fn from_tensors(
        config: DiffusionTrainConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let varmap = VarMap::new();
        let mut params = Vec::with_capacity(tensors.len());
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| TrainError::Invalid("weight map lock poisoned".into()))?;
            for (name, t) in &tensors {
                let var = Var::from_tensor(t).map_err(TrainError::candle(name.clone()))?;
                data.insert(name.clone(), var.clone());
                params.push((name.clone(), var));
            }
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let mut dit = DiT::new(&config.model, vb).map_err(TrainError::candle("building DiT"))?;
        dit.set_kernels(Kernels::Differentiable);
        let adamw = AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        };
        let opt = AdamW::new(params.clone(), adamw).map_err(TrainError::candle("optimiser"))?;
        let ema = Ema::new(&params, config.ema_decay).map_err(TrainError::candle("EMA"))?;
        let table = NoiseTable::dit_default();
        let loss_weight = table
            .alphas_cumprod
            .iter()
            .map(|&a| {
                let snr = a / (1.0 - a);
                config
                    .min_snr_gamma
                    .map_or(1.0, |g| (snr.min(g) / snr) as f32)
            })
            .collect();
        Ok(DiffusionTrainer {
            loss_weight,
            signal: table
                .alphas_cumprod
                .iter()
                .map(|a| a.sqrt() as f32)
                .collect(),
            noise: table
                .alphas_cumprod
                .iter()
                .map(|a| (1.0 - a).sqrt() as f32)
                .collect(),
            config,
            dit,
            params,
            opt,
            ema,
            device: device.clone(),
            step: 0,
            elapsed_secs: 0.0,
            losses: Vec::new(),
        })
    }

    /// Continues the run saved in `dir`.
    pub fn resume(dir: &Path, device: &Device) -> Result<Self, TrainError> {
        let (tensors, state): (_, TrainState) = checkpoint::load(dir, device)?;
        let mut trainer = Self::from_tensors(
            state.config.clone(),
            checkpoint::with_prefix(&tensors, "model"),
            device,
        )?;
        trainer
            .opt
            .load_state(&tensors, state.step)
            .map_err(TrainError::candle("restoring optimiser"))?;
        trainer
            .ema
            .load(&checkpoint::with_prefix(&tensors, "ema"), state.ema_updates)
            .map_err(TrainError::candle("restoring EMA"))?;
        trainer.step = state.step;
        trainer.elapsed_secs = state.elapsed_secs;
        trainer.losses = state.losses;
        Ok(trainer)
    }

    pub fn config(&self) -> &DiffusionTrainConfig {
        &self.config
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn losses(&self) -> &[LossPoint] {
        &self.losses
    }

    /// Wall time spent training so far, over all sessions of this run.
    pub fn elapsed_secs(&self) -> f64 {
        self.elapsed_secs
    }

    /// One optimisation step on batch number `self.step`. Returns (loss, grad norm, lr).
    pub fn train_step(&mut self) -> Result<(f64, f64, f64), TrainError> {
        let c = &self.config;
        let err = |what: &'static str| TrainError::candle(format!("step {}: {what}", self.step));
        let batch = scene_batch(
            c.seed,
            self.step,
            c.batch,
            c.model.sample_size,
            &self.device,
        )
        .map_err(err("drawing batch"))?;
        // A separate stream for timesteps, noise and label dropout, also fixed by (seed, step).
        let mut rng =
            Rng::new(c.seed.wrapping_add(0xD1FF) ^ self.step.wrapping_mul(0xA24B_AED4_963E_E407));
        let n = c.batch;
        let train_steps = self.signal.len() as u64;
        let t: Vec<usize> = (0..n).map(|_| rng.below(train_steps) as usize).collect();
        let null = c.model.num_classes() as u32;
        let labels: Vec<u32> = batch
            .label_values
            .iter()
            .map(|&l| {
                if rng.uniform() < c.null_class_prob {
                    null
                } else {
                    l
                }
            })
            .collect();
        let eps = rng
            .randn(batch.images.shape(), &self.device)
            .map_err(err("noise"))?;
        let coef = |table: &[f32]| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = t.iter().map(|&i| table[i]).collect();
            Tensor::from_vec(v, (n, 1, 1, 1), &self.device)
        };
        let x_t = (batch
            .images
            .broadcast_mul(&coef(&self.signal).map_err(err("schedule"))?)
            .map_err(err("q_sample"))?
            + eps
                .broadcast_mul(&coef(&self.noise).map_err(err("schedule"))?)
                .map_err(err("q_sample"))?)
        .map_err(err("q_sample"))?;
        let t_tensor = Tensor::from_vec(
            t.iter().map(|&i| i as f32).collect::<Vec<_>>(),
            n,
            &self.device,
        )
        .map_err(err("timesteps"))?;
        let labels = Tensor::from_vec(labels, n, &self.device).map_err(err("labels"))?;
        let pred = self
            .dit
            .forward(&x_t, &t_tensor, &labels)
            .map_err(err("forward"))?;
        let weight = coef(&self.loss_weight).map_err(err("loss weight"))?;
        let loss = (pred - eps)
            .map_err(err("loss"))?
            .sqr()
            .map_err(err("loss"))?
            .broadcast_mul(&weight)
            .map_err(err("loss"))?
            .mean_all()
            .map_err(err("loss"))?;
        let grads = loss.backward().map_err(err("backward"))?;
        let lr = warmup_constant_lr(self.step, c.warmup_steps, c.lr);
        let grad_norm = self.opt.step(&grads, lr).map_err(err("optimiser"))?;
        self.ema.update(&self.params).map_err(err("EMA"))?;
        let loss = loss.to_scalar::<f32>().map_err(err("loss"))? as f64;
        self.losses.push(LossPoint {
            step: self.step,
            loss,
        });
        self.step += 1;
        Ok((loss, grad_norm, lr))
    }

    /// Trains until `config.steps`, checkpointing into `dir` every `checkpoint_every` steps and
    /// at the end (or when `on_progress` asks to stop).
    pub fn run(
        &mut self,
        dir: &Path,
        on_progress: &mut dyn FnMut(&TrainProgress) -> TrainFlow,
    ) -> Result<(), TrainError> {
        let mut loss_avg = RunningMean::new(50);
        let mut speed = RunningMean::new(20);
        let total = self.config.steps;
        while self.step < total {
            let started = Instant::now();
            let (loss, grad_norm, lr) = self.train_step()?;
            let secs = started.elapsed().as_secs_f64();
            self.elapsed_secs += secs;
            let step_secs = speed.push(secs);
            let progress = TrainProgress {
                step: self.step,
                total_steps: total,
                loss,
                loss_avg: loss_avg.push(loss),
                lr,
                grad_norm,
                images_per_sec: self.config.batch as f64 / step_secs.max(1e-9),
                elapsed_secs: self.elapsed_secs,
                eta_secs: step_secs * (total - self.step) as f64,
            };
            let stop = on_progress(&progress) == TrainFlow::Stop;
            if stop
                || self
                    .step
                    .is_multiple_of(self.config.checkpoint_every.max(1))
                || self.step == total
            {
                self.save_checkpoint(dir)?;
            }
            if stop {
                return Err(TrainError::Cancelled);
            }
        }
        Ok(())
    }

    /// Saves weights, EMA, optimiser moments and the loss log into `dir`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        let model: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        let mut tensors = checkpoint::prefixed(model, "model");
        tensors.extend(checkpoint::prefixed(self.ema.tensors(), "ema"));
        tensors.extend(self.opt.state());
        let state = TrainState {
            config: self.config.clone(),
            step: self.step,
            ema_updates: self.ema.updates(),
            elapsed_secs: self.elapsed_secs,
            losses: self.losses.clone(),
        };
        checkpoint::save(dir, &tensors, &state)
    }

    /// Writes the EMA weights as a diffusers checkpoint folder (`config.json` + safetensors).
    pub fn export_ema(&self, dir: &Path) -> Result<(), TrainError> {
        save_dit(dir, &self.config.model, &self.ema.tensors()).map_err(|e| TrainError::file(dir, e))
    }

    /// The EMA weights as an inference model (fused kernels).
    pub fn ema_model(&self) -> Result<DiT, TrainError> {
        let vb = VarBuilder::from_tensors(self.ema.tensors(), DType::F32, &self.device);
        DiT::new(&self.config.model, vb).map_err(TrainError::candle("building EMA model"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> DiffusionTrainConfig {
        DiffusionTrainConfig {
            model: DiTConfig {
                num_attention_heads: 2,
                attention_head_dim: 16,
                num_layers: 2,
                ..crate::models::builtin::scenes_dit_config()
            },
            steps: 40,
            batch: 8,
            lr: 2e-3,
            warmup_steps: 5,
            checkpoint_every: 1000,
            ..DiffusionTrainConfig::default()
        }
    }

    fn weights(t: &DiffusionTrainer) -> Vec<Vec<f32>> {
        t.params
            .iter()
            .map(|(_, v)| {
                v.as_tensor()
                    .flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The gradient reaches the patch embedding: training runs candle's ops there, not the CPU
    /// kernels' path (which records no backward pass).
    #[test]
    fn the_patch_embedding_gets_a_gradient() -> Result<(), TrainError> {
        let mut trainer = DiffusionTrainer::new(tiny_config(), &Device::Cpu)?;
        // One step first: the zero-initialised output layer passes no gradient back at start.
        trainer.train_step()?;
        let err = || TrainError::candle("gradient");
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).map_err(err())?;
        let t = Tensor::new(&[100f32, 700.0], &Device::Cpu).map_err(err())?;
        let y = Tensor::new(&[1u32, 2], &Device::Cpu).map_err(err())?;
        let loss = trainer
            .dit
            .forward(&x, &t, &y)
            .and_then(|p| p.sqr())
            .and_then(|p| p.mean_all())
            .map_err(err())?;
        let grads = loss.backward().map_err(err())?;
        let (_, weight) = trainer
            .params
            .iter()
            .find(|(name, _)| name == "pos_embed.proj.weight")
            .ok_or_else(|| TrainError::Invalid("no pos_embed.proj.weight".into()))?;
        let norm = grads
            .get(weight.as_tensor())
            .ok_or_else(|| TrainError::Invalid("no gradient for the patch embedding".into()))?
            .abs()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .map_err(err())?;
        assert!(norm > 0.0, "patch embedding gradient {norm}");
        Ok(())
    }

    /// A run stopped, saved and resumed ends exactly where the uninterrupted run ends.
    #[test]
    fn resume_continues_the_same_run() -> Result<(), TrainError> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::Invalid(e.to_string()))?;
        let config = DiffusionTrainConfig {
            steps: 4,
            ..tiny_config()
        };
        let mut straight = DiffusionTrainer::new(config.clone(), &Device::Cpu)?;
        for _ in 0..4 {
            straight.train_step()?;
        }
        let mut first = DiffusionTrainer::new(config, &Device::Cpu)?;
        first.train_step()?;
        first.train_step()?;
        first.save_checkpoint(dir.path())?;
        let mut resumed = DiffusionTrainer::resume(dir.path(), &Device::Cpu)?;
        assert_eq!(resumed.step(), 2);
        resumed.train_step()?;
        resumed.train_step()?;
        assert_eq!(weights(&straight), weights(&resumed));
        assert_eq!(straight.losses(), resumed.losses());
        let (a, b) = (straight.ema.tensors(), resumed.ema.tensors());
        for (name, t) in &a {
            let d = (t - &b[name])
                .and_then(|d| d.abs())
                .and_then(|d| d.sum_all())
                .and_then(|d| d.to_scalar::<f32>())
                .map_err(TrainError::candle("compare"))?;
            assert_eq!(d, 0.0, "EMA {name} differs");
        }
        Ok(())
    }

    /// Training lowers the denoising loss, and the exported EMA loads as an inference model.
    #[test]
    fn loss_falls_and_export_loads() -> Result<(), TrainError> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::Invalid(e.to_string()))?;
        let mut trainer = DiffusionTrainer::new(tiny_config(), &Device::Cpu)?;
        trainer.run(dir.path(), &mut |_| TrainFlow::Continue)?;
        let losses: Vec<f64> = trainer.losses().iter().map(|p| p.loss).collect();
        let head = losses[..5].iter().sum::<f64>() / 5.0;
        let tail = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(tail < 0.7 * head, "loss {head:.3} → {tail:.3}");
        assert!(checkpoint::exists(dir.path()));
        let export = dir.path().join("model");
        trainer.export_ema(&export)?;
        let dit = crate::models::loading::load_dit(&export, DType::F32, &Device::Cpu)
            .map_err(|e| TrainError::Invalid(e.to_string()))?;
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)
            .map_err(TrainError::candle("input"))?;
        let t = Tensor::new(&[500f32], &Device::Cpu).map_err(TrainError::candle("t"))?;
        let y = Tensor::new(&[1u32], &Device::Cpu).map_err(TrainError::candle("y"))?;
        let out = dit
            .forward(&x, &t, &y)
            .map_err(TrainError::candle("forward"))?;
        assert_eq!(out.dims(), &[1, 3, 32, 32]);
        Ok(())
    }
}
