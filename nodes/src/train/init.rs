//! DiT weight initialisation as the DiT paper does it: Xavier-uniform linears and patch
//! projection, N(0, 0.02²) timestep MLP and class tables, and adaLN-Zero (every modulation and
//! the output projection start at zero, so each block starts as the identity).

use crate::models::dit::random::tensor_shapes;
use crate::models::dit::DiTConfig;
use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};
use std::collections::HashMap;

/// How one named tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Zeros,
    Normal(f64),
    XavierUniform { fan_in: usize, fan_out: usize },
}

fn init_for(name: &str, shape: &[usize]) -> Init {
    let zero_init = name.contains("norm1.linear") || name.starts_with("proj_out_");
    if zero_init || name.ends_with(".bias") {
        Init::Zeros
    } else if name.contains("timestep_embedder") || name.contains("embedding_table") {
        Init::Normal(0.02)
    } else {
        let fan_out = shape.first().copied().unwrap_or(1);
        let fan_in = shape.iter().skip(1).product::<usize>().max(1);
        Init::XavierUniform { fan_in, fan_out }
    }
}

/// Fresh training weights for `config`, seeded, in diffusers tensor names (f32, on `device`).
pub fn init_dit_tensors(
    config: &DiTConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = Rng::new(seed);
    tensor_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match init_for(&name, &shape) {
                Init::Zeros => vec![0.0; n],
                Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
                Init::XavierUniform { fan_in, fan_out } => {
                    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                    (0..n)
                        .map(|_| ((rng.uniform() * 2.0 - 1.0) * a) as f32)
                        .collect()
                }
            };
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?.to_device(device)?;
            Ok((name, tensor))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::builtin::random_tiny_config;

    #[test]
    fn adaln_zero_and_xavier_ranges() -> Result<()> {
        let config = random_tiny_config();
        let t = init_dit_tensors(&config, 0, &Device::Cpu)?;
        let max_abs = |name: &str| -> Result<f32> { t[name].abs()?.max_all()?.to_scalar::<f32>() };
        assert_eq!(max_abs("transformer_blocks.0.norm1.linear.weight")?, 0.0);
        assert_eq!(max_abs("proj_out_2.weight")?, 0.0);
        assert_eq!(max_abs("transformer_blocks.0.attn1.to_q.bias")?, 0.0);
        let q = max_abs("transformer_blocks.0.attn1.to_q.weight")?;
        let bound = (6.0f32 / (192.0 + 192.0)).sqrt();
        assert!(q > 0.5 * bound && q <= bound, "{q} vs {bound}");
        assert_eq!(t.len(), tensor_shapes(&config).len());
        Ok(())
    }
}
