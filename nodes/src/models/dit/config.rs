//! DiT configuration: the fields of diffusers' `DiTTransformer2DModel` `config.json`, plus presets.

use serde::{Deserialize, Serialize};

/// Mirrors diffusers' `DiTTransformer2DModel` config (field names as in `config.json`).
/// Unknown fields (e.g. `_class_name`, `_diffusers_version`) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiTConfig {
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    pub num_layers: usize,
    pub attention_bias: bool,
    pub sample_size: usize,
    pub patch_size: usize,
    pub activation_fn: String,
    pub num_embeds_ada_norm: usize,
    pub norm_type: String,
    pub norm_elementwise_affine: bool,
    pub norm_eps: f64,
}

impl Default for DiTConfig {
    /// diffusers' defaults, which are DiT-XL/2 at 256 px (latent 32×32).
    fn default() -> Self {
        DiTConfig {
            num_attention_heads: 16,
            attention_head_dim: 72,
            in_channels: 4,
            out_channels: None,
            num_layers: 28,
            attention_bias: true,
            sample_size: 32,
            patch_size: 2,
            activation_fn: "gelu-approximate".to_string(),
            num_embeds_ada_norm: 1000,
            norm_type: "ada_norm_zero".to_string(),
            norm_elementwise_affine: false,
            norm_eps: 1e-5,
        }
    }
}

impl DiTConfig {
    /// DiT-XL/2 for 256×256 images (latent 32×32, learned sigma), as facebook/DiT-XL-2-256.
    pub fn xl_2_256() -> Self {
        DiTConfig {
            out_channels: Some(8),
            ..DiTConfig::default()
        }
    }

    /// Width of the token embedding.
    pub fn hidden_size(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// True when the model predicts a variance too (out = 2 × in channels); samplers use the
    /// first `in_channels` as the noise prediction, like diffusers' `DiTPipeline`.
    pub fn learned_sigma(&self) -> bool {
        self.out_channels() == 2 * self.in_channels
    }

    /// Number of class labels; the null class for guidance is this index.
    pub fn num_classes(&self) -> usize {
        self.num_embeds_ada_norm
    }

    /// Checks what this implementation supports; `Err` names the field at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.norm_type != "ada_norm_zero" {
            return Err(format!(
                "norm_type {:?} is not supported (only \"ada_norm_zero\")",
                self.norm_type
            ));
        }
        if self.activation_fn != "gelu-approximate" {
            return Err(format!(
                "activation_fn {:?} is not supported (only \"gelu-approximate\")",
                self.activation_fn
            ));
        }
        if self.norm_elementwise_affine {
            return Err("norm_elementwise_affine = true is not supported".to_string());
        }
        let fields = [
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("in_channels", self.in_channels),
            ("num_layers", self.num_layers),
            ("sample_size", self.sample_size),
            ("patch_size", self.patch_size),
            ("num_embeds_ada_norm", self.num_embeds_ada_norm),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.sample_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "sample_size {} is not a multiple of patch_size {}",
                self.sample_size, self.patch_size
            ));
        }
        if !self.hidden_size().is_multiple_of(4) {
            return Err(format!(
                "hidden size {} must be divisible by 4 for the 2-D position embedding",
                self.hidden_size()
            ));
        }
        Ok(())
    }
}
