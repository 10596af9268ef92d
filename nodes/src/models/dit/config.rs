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

    /// Width of the token embedding (saturating: [`DiTConfig::check`] refuses overflow).
    pub fn hidden_size(&self) -> usize {
        self.num_attention_heads
            .saturating_mul(self.attention_head_dim)
    }

    /// The number of weights a checkpoint of this config holds (within a few percent),
    /// or `None` when it overflows.
    pub fn weight_count(&self) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let h = u(self.num_attention_heads)?.checked_mul(u(self.attention_head_dim)?)?;
        let classes = u(self.num_embeds_ada_norm)?.checked_add(1)?;
        let pp = u(self.patch_size)?.checked_mul(u(self.patch_size)?)?;
        let out = u(self.out_channels())?;
        let h2 = h.checked_mul(h)?;
        // Per block: attention 4h², feed-forward 8h², adaLN 6h², timestep MLP 256h + h², the
        // class table, and the biases.
        let block = h2
            .checked_mul(19)?
            .checked_add(h.checked_mul(classes.checked_add(276)?)?)?;
        u(self.num_layers)?
            .checked_mul(block)?
            .checked_add(u(self.in_channels)?.checked_mul(pp)?.checked_mul(h)?)?
            .checked_add(h2.checked_mul(2)?)?
            .checked_add(h.checked_mul(pp)?.checked_mul(out)?)
    }

    /// Bytes one denoising step needs for a batch of `batch` with `dtype_bytes`-byte values:
    /// the weights, the position table, and the largest activations (the attention scores,
    /// batch × heads × tokens², and a dozen token-width buffers). `None` when a size
    /// overflows. An estimate, within a small factor, so that a config asking for more than
    /// the machine has is refused before anything is allocated.
    pub fn memory_estimate(&self, batch: usize, dtype_bytes: usize) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let h = u(self.num_attention_heads)?.checked_mul(u(self.attention_head_dim)?)?;
        let grid = u(self.sample_size)? / u(self.patch_size)?.max(1);
        let tokens = grid.checked_mul(grid)?;
        let weights = self.weight_count()?;
        let positions = tokens.checked_mul(h)?;
        let batch = u(batch)?;
        let scores = batch
            .checked_mul(u(self.num_attention_heads)?)?
            .checked_mul(tokens)?
            .checked_mul(tokens)?
            .checked_mul(2)?;
        let buffers = batch.checked_mul(tokens)?.checked_mul(h)?.checked_mul(12)?;
        weights
            .checked_add(positions)?
            .checked_add(scores)?
            .checked_add(buffers)?
            .checked_mul(u(dtype_bytes)?)
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
        if self.out_channels == Some(0) {
            return Err("out_channels must be positive".to_string());
        }
        if self
            .num_attention_heads
            .checked_mul(self.attention_head_dim)
            .is_none()
        {
            return Err(format!(
                "num_attention_heads {} × attention_head_dim {} overflows",
                self.num_attention_heads, self.attention_head_dim
            ));
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
        if self.memory_estimate(2, 4).is_none() {
            return Err(format!(
                "the sizes overflow: sample_size {}, patch_size {}, {} layers of width {}",
                self.sample_size,
                self.patch_size,
                self.num_layers,
                self.hidden_size()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config(name: &str) -> (DiTConfig, u64) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let config: DiTConfig = serde_json::from_str(&text).unwrap();
        let weights = candle_core::safetensors::load(
            dir.join("diffusion_pytorch_model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let count = weights.values().map(|t| t.elem_count() as u64).sum();
        (config, count)
    }

    #[test]
    fn the_weight_count_matches_real_checkpoints() {
        for name in ["dit_pixel", "dit_latent"] {
            let (config, actual) = fixture_config(name);
            let estimate = config.weight_count().unwrap();
            let ratio = estimate as f64 / actual as f64;
            assert!(
                (0.95..1.1).contains(&ratio),
                "{name}: {estimate} vs {actual}"
            );
        }
    }

    #[test]
    fn heads_times_head_dim_overflowing_is_refused() {
        let config = DiTConfig {
            num_attention_heads: usize::MAX / 2,
            attention_head_dim: 4,
            ..DiTConfig::default()
        };
        let err = config.check().unwrap_err();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn zero_out_channels_is_refused() {
        let config = DiTConfig {
            out_channels: Some(0),
            ..DiTConfig::default()
        };
        assert!(config.check().unwrap_err().contains("out_channels"));
    }

    #[test]
    fn a_huge_sample_size_overflows_the_estimate_or_asks_for_terabytes() {
        let config = DiTConfig {
            sample_size: 1 << 20,
            ..DiTConfig::default()
        };
        match config.memory_estimate(2, 4) {
            None => assert!(config.check().is_err()),
            Some(bytes) => assert!(bytes > 1 << 40, "{bytes}"),
        }
        // DiT-XL/2 at 256 px: 675 M weights, a few GB in f32.
        let xl = DiTConfig::xl_2_256();
        let bytes = xl.memory_estimate(2, 4).unwrap();
        assert!((2 << 30..8 << 30).contains(&bytes), "{bytes}");
    }
}
