//! Randomly initialised DiT checkpoints (seeded), in diffusers tensor layout: for tests,
//! benchmarks and the placeholder built-in model.

use super::config::DiTConfig;
use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};
use std::collections::HashMap;

/// Every tensor a diffusers DiT checkpoint holds, with its shape, in a stable order.
pub fn tensor_shapes(config: &DiTConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size();
    let p = config.patch_size;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "pos_embed.proj.weight".into(),
            vec![d, config.in_channels, p, p],
        ),
        ("pos_embed.proj.bias".into(), vec![d]),
    ];
    for i in 0..config.num_layers {
        let b = format!("transformer_blocks.{i}");
        let mut push = |name: &str, shape: Vec<usize>| shapes.push((format!("{b}.{name}"), shape));
        push("norm1.emb.timestep_embedder.linear_1.weight", vec![d, 256]);
        push("norm1.emb.timestep_embedder.linear_1.bias", vec![d]);
        push("norm1.emb.timestep_embedder.linear_2.weight", vec![d, d]);
        push("norm1.emb.timestep_embedder.linear_2.bias", vec![d]);
        push(
            "norm1.emb.class_embedder.embedding_table.weight",
            vec![config.num_classes() + 1, d],
        );
        push("norm1.linear.weight", vec![6 * d, d]);
        push("norm1.linear.bias", vec![6 * d]);
        for name in ["to_q", "to_k", "to_v"] {
            push(&format!("attn1.{name}.weight"), vec![d, d]);
            if config.attention_bias {
                push(&format!("attn1.{name}.bias"), vec![d]);
            }
        }
        push("attn1.to_out.0.weight", vec![d, d]);
        push("attn1.to_out.0.bias", vec![d]);
        push("ff.net.0.proj.weight", vec![4 * d, d]);
        push("ff.net.0.proj.bias", vec![4 * d]);
        push("ff.net.2.weight", vec![d, 4 * d]);
        push("ff.net.2.bias", vec![d]);
    }
    shapes.push(("proj_out_1.weight".into(), vec![2 * d, d]));
    shapes.push(("proj_out_1.bias".into(), vec![2 * d]));
    shapes.push((
        "proj_out_2.weight".into(),
        vec![p * p * config.out_channels(), d],
    ));
    shapes.push((
        "proj_out_2.bias".into(),
        vec![p * p * config.out_channels()],
    ));
    shapes
}

/// Seeded random weights: matrices ~ N(0, 1/fan_in), biases and tables ~ N(0, 0.02²).
pub fn random_tensors(config: &DiTConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = Rng::new(seed);
    tensor_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let std = if shape.len() >= 2 && !name.contains("embedding_table") {
                let fan_in: usize = shape[1..].iter().product();
                1.0 / (fan_in as f64).sqrt()
            } else {
                0.02
            };
            let t = (rng.randn(shape, &Device::Cpu)? * std)?;
            Ok((name, t))
        })
        .collect()
}
