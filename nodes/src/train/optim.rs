//! AdamW (decoupled weight decay, bias-corrected moments, global-norm gradient clipping) and an
//! exponential moving average of the weights. Both expose their state as named tensors so a
//! checkpoint can resume a run exactly (candle-nn's AdamW keeps its moments private).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; `None` = no clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// One trainable tensor with its moments.
struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// Weight decay applies to matrices only, never to biases or embedding tables.
fn decays(name: &str, var: &Var) -> bool {
    var.rank() >= 2 && !name.contains("embedding_table")
}

pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    steps_taken: u64,
}

impl AdamW {
    /// `params` in a stable order (the caller sorts by name).
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Param {
                    decay: decays(&name, &var),
                    m: zeros.clone(),
                    v: zeros,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            config,
            steps_taken: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// One update at learning rate `lr`. Returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut sq = 0f64;
        let mut found = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let g = grads.get(p.var.as_tensor()).map(|g| g.detach());
            if let Some(g) = &g {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            found.push(g);
        }
        let norm = sq.sqrt();
        let clip = match self.config.max_grad_norm {
            Some(max) if norm > max && norm.is_finite() => max / norm,
            _ => 1.0,
        };
        if !norm.is_finite() {
            candle_core::bail!("gradient norm is {norm}: training diverged");
        }
        self.steps_taken += 1;
        let c = self.config;
        let t = self.steps_taken as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (p, g) in self.params.iter_mut().zip(found) {
            let Some(g) = g else { continue };
            let g = (g * clip)?;
            p.m = ((&p.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?.detach();
            p.v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?.detach();
            let m_hat = (&p.m / bc1)?;
            let v_hat = (&p.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let w = p.var.as_tensor().detach();
            let w = if p.decay && c.weight_decay > 0.0 {
                (&w * (1.0 - lr * c.weight_decay))?
            } else {
                w
            };
            p.var.set(&(w - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moments as named tensors (`adam_m.NAME`, `adam_v.NAME`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for p in &self.params {
            out.insert(format!("adam_m.{}", p.name), p.m.clone());
            out.insert(format!("adam_v.{}", p.name), p.v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] after `steps_taken` updates.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, steps_taken: u64) -> Result<()> {
        for p in &mut self.params {
            for (prefix, slot) in [("adam_m", &mut p.m), ("adam_v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let t = state
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::msg(format!("checkpoint lacks {key}")))?;
                if t.dims() != slot.dims() {
                    candle_core::bail!("{key}: shape {:?}, expected {:?}", t.dims(), slot.dims());
                }
                *slot = t.to_device(slot.device())?.detach();
            }
        }
        self.steps_taken = steps_taken;
        Ok(())
    }
}

/// Exponential moving average of the weights, with the usual warm-up of the decay
/// (`min(decay, (1 + n) / (10 + n))`) so early averages are not dominated by the init.
pub struct Ema {
    decay: f64,
    updates: u64,
    tensors: Vec<(String, Tensor)>,
}

impl Ema {
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        Ok(Ema {
            decay,
            updates: 0,
            // A deep copy: `detach` would share storage with the variable, which the optimiser
            // then overwrites in place.
            tensors: params
                .iter()
                .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?.detach())))
                .collect::<Result<_>>()?,
        })
    }

    pub fn update(&mut self, params: &[(String, Var)]) -> Result<()> {
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        for ((_, avg), (_, var)) in self.tensors.iter_mut().zip(params) {
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
        }
        self.updates += 1;
        Ok(())
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The averaged weights, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.tensors.iter().cloned().collect()
    }

    /// Restores averages saved by [`Ema::tensors`].
    pub fn load(&mut self, saved: &HashMap<String, Tensor>, updates: u64) -> Result<()> {
        for (name, avg) in &mut self.tensors {
            let t = saved
                .get(name)
                .ok_or_else(|| candle_core::Error::msg(format!("checkpoint lacks ema {name}")))?;
            *avg = t.to_device(avg.device())?.detach();
        }
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Minimises (w − 3)² from w = 0: AdamW must get close, and the first step must move by
    /// about lr (Adam's bias-corrected first step is ±lr).
    #[test]
    fn adamw_minimises_a_quadratic() -> Result<()> {
        let w = Var::from_tensor(&Tensor::new(&[0f32], &Device::Cpu)?)?;
        let params = vec![("w".to_string(), w.clone())];
        let mut opt = AdamW::new(params, AdamWConfig::default())?;
        let loss = (w.as_tensor() - 3.0)?.sqr()?.sum_all()?;
        opt.step(&loss.backward()?, 0.1)?;
        let first = w.as_tensor().to_vec1::<f32>()?[0];
        assert!((first - 0.1).abs() < 1e-4, "first step {first}");
        for _ in 0..500 {
            let loss = (w.as_tensor() - 3.0)?.sqr()?.sum_all()?;
            opt.step(&loss.backward()?, 0.05)?;
        }
        let end = w.as_tensor().to_vec1::<f32>()?[0];
        assert!((end - 3.0).abs() < 0.05, "ended at {end}");
        Ok(())
    }

    #[test]
    fn state_round_trip_resumes_identically() -> Result<()> {
        let make = || -> Result<(Var, AdamW)> {
            let w = Var::from_tensor(&Tensor::new(&[[1f32, -2.0]], &Device::Cpu)?)?;
            let opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default())?;
            Ok((w, opt))
        };
        let step = |w: &Var, opt: &mut AdamW| -> Result<()> {
            let loss = w.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?, 0.01).map(|_| ())
        };
        let (w1, mut o1) = make()?;
        for _ in 0..3 {
            step(&w1, &mut o1)?;
        }
        let (w2, mut o2) = make()?;
        w2.set(w1.as_tensor())?;
        o2.load_state(&o1.state(), o1.steps_taken())?;
        step(&w1, &mut o1)?;
        step(&w2, &mut o2)?;
        assert_eq!(
            w1.as_tensor().to_vec2::<f32>()?,
            w2.as_tensor().to_vec2::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn ema_tracks_with_warmup() -> Result<()> {
        let w = Var::from_tensor(&Tensor::new(&[0f32], &Device::Cpu)?)?;
        let params = vec![("w".to_string(), w.clone())];
        let mut ema = Ema::new(&params, 0.99)?;
        w.set(&Tensor::new(&[1f32], &Device::Cpu)?)?;
        ema.update(&params)?;
        // First update: d = min(0.99, 1/10) = 0.1 → 0.9.
        let v = ema.tensors()["w"].to_vec1::<f32>()?[0];
        assert!((v - 0.9).abs() < 1e-6, "{v}");
        Ok(())
    }
}
