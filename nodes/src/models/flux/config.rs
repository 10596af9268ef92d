//! FLUX.1 configuration: the fields of diffusers' `FluxTransformer2DModel` `config.json`, with
//! the dev and schnell presets and the checks that keep a hostile config from the loader.

use serde::{Deserialize, Serialize};

/// Largest width, depth or length a config may ask for (FLUX.1 is 3072 wide, 57 blocks).
const MAX_DIM: usize = 1 << 16;

/// Mirrors diffusers' `FluxTransformer2DModel` config (field names as in `config.json`);
/// unknown fields (`_class_name`, `_diffusers_version`) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FluxConfig {
    pub patch_size: usize,
    /// Channels of a packed token: 16 latent channels × 2 × 2.
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    /// Dual-stream blocks (`transformer_blocks`).
    pub num_layers: usize,
    /// Single-stream blocks (`single_transformer_blocks`).
    pub num_single_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    /// Width of the T5 tokens.
    pub joint_attention_dim: usize,
    /// Width of the pooled CLIP embedding.
    pub pooled_projection_dim: usize,
    /// FLUX.1-dev embeds the (distilled) guidance scale; schnell does not.
    pub guidance_embeds: bool,
    /// RoPE widths per position axis (text/index, row, column); they sum to the head width.
    pub axes_dims_rope: Vec<usize>,
}

impl Default for FluxConfig {
    /// diffusers' defaults: FLUX.1-schnell's transformer.
    fn default() -> Self {
        FluxConfig {
            patch_size: 1,
            in_channels: 64,
            out_channels: None,
            num_layers: 19,
            num_single_layers: 38,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 4096,
            pooled_projection_dim: 768,
            guidance_embeds: false,
            axes_dims_rope: vec![16, 56, 56],
        }
    }
}

impl FluxConfig {
    /// black-forest-labs/FLUX.1-dev's transformer.
    pub fn dev() -> Self {
        FluxConfig {
            guidance_embeds: true,
            ..FluxConfig::default()
        }
    }

    /// black-forest-labs/FLUX.1-schnell's transformer.
    pub fn schnell() -> Self {
        FluxConfig::default()
    }

    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads
            .saturating_mul(self.attention_head_dim)
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Latent channels before 2×2 packing.
    pub fn latent_channels(&self) -> usize {
        self.in_channels / 4
    }

    /// The number of weights a checkpoint of this config holds (within a few percent).
    pub fn weight_count(&self) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let h = u(self.inner_dim())?;
        let h2 = h.checked_mul(h)?;
        // Double block: 2 × (attention 4h², feed-forward 8h², adaLN 6h²); single block:
        // attention 3h², MLP 4h², output 5h², adaLN 3h².
        let double = h2.checked_mul(36)?;
        let single = h2.checked_mul(15)?;
        u(self.num_layers)?
            .checked_mul(double)?
            .checked_add(u(self.num_single_layers)?.checked_mul(single)?)?
            .checked_add(
                h.checked_mul(
                    u(self.in_channels)?
                        .checked_add(u(self.joint_attention_dim)?)?
                        .checked_add(u(self.pooled_projection_dim)?)?
                        .checked_add(u(self.out_channels())?)?
                        .checked_add(768)?,
                )?,
            )?
            .checked_add(h2.checked_mul(6)?)
    }

    /// What this app can build; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, message: String| Err(format!("FLUX config `{name}`: {message}"));
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
            ("num_layers", self.num_layers),
            ("num_single_layers", self.num_single_layers),
        ] {
            if v > MAX_DIM {
                return field(name, format!("{v} is beyond {MAX_DIM}"));
            }
        }
        if self.inner_dim() > MAX_DIM {
            return field(
                "num_attention_heads",
                format!(
                    "{} heads × {} is wider than {MAX_DIM}",
                    self.num_attention_heads, self.attention_head_dim
                ),
            );
        }
        if self.patch_size != 1 {
            return field(
                "patch_size",
                format!(
                    "{}: FLUX.1 packs 2×2 latents itself (patch_size 1)",
                    self.patch_size
                ),
            );
        }
        if self.in_channels == 0 || !self.in_channels.is_multiple_of(4) {
            return field(
                "in_channels",
                format!(
                    "{}: a packed token is 4 × the latent channels",
                    self.in_channels
                ),
            );
        }
        if self.out_channels() != self.in_channels {
            return field(
                "out_channels",
                format!(
                    "{} differs from in_channels {}",
                    self.out_channels(),
                    self.in_channels
                ),
            );
        }
        for (name, v) in [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
        ] {
            if v == 0 {
                return field(name, "must be at least 1".into());
            }
        }
        if self.num_layers + self.num_single_layers == 0 {
            return field("num_layers", "the model has no blocks".into());
        }
        if !self.attention_head_dim.is_multiple_of(2) {
            return field(
                "attention_head_dim",
                format!("{}: RoPE needs an even head width", self.attention_head_dim),
            );
        }
        if self.axes_dims_rope.len() != 3
            || self.axes_dims_rope.iter().any(|d| *d == 0 || d % 2 != 0)
            || self.axes_dims_rope.iter().sum::<usize>() != self.attention_head_dim
        {
            return field(
                "axes_dims_rope",
                format!(
                    "{:?}: three even widths summing to attention_head_dim {}",
                    self.axes_dims_rope, self.attention_head_dim
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presets_are_flux_1() {
        assert!(FluxConfig::dev().check().is_ok());
        assert_eq!(FluxConfig::dev().inner_dim(), 3072);
        assert!(FluxConfig::dev().guidance_embeds);
        assert!(!FluxConfig::schnell().guidance_embeds);
        // FLUX.1-dev's transformer has 11.9 B weights.
        let n = FluxConfig::dev().weight_count().expect("count") as f64;
        assert!((n / 11.9e9 - 1.0).abs() < 0.05, "{n}");
    }

    #[test]
    fn a_bad_rope_split_names_the_field() {
        let c = FluxConfig {
            axes_dims_rope: vec![16, 56, 50],
            ..FluxConfig::dev()
        };
        assert!(c.check().expect_err("refused").contains("axes_dims_rope"));
    }
}
