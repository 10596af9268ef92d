//! Prompt encoding for text-conditioned pipelines (FLUX.1): CLIP-L's pooled embedding and T5's
//! tokens, with candle-transformers' encoders and the pipeline's own tokenizers, exactly as
//! `FluxPipeline.encode_prompt` does it. Encoded prompts are kept, so a prompt that does not
//! change is not encoded again while the model stays loaded.

pub mod tokenize;

use crate::models::blocks::TextConditioning;
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use candle_transformers::models::t5;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokenize::PromptTokenizer;

/// The fields of a transformers `CLIPTextConfig` this app reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipFields {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default)]
    pub projection_dim: usize,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    #[serde(default = "default_clip_eps")]
    pub layer_norm_eps: f64,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}

fn default_eos() -> u32 {
    2
}

fn default_clip_eps() -> f64 {
    1e-5
}

/// Largest width or depth a text encoder config may ask for.
const MAX_DIM: usize = 1 << 17;

impl ClipFields {
    fn check(&self) -> Result<ClipTextConfig, String> {
        if self.hidden_act != "quick_gelu" {
            return Err(format!(
                "hidden_act {:?}: only quick_gelu (CLIP-L's) is implemented",
                self.hidden_act
            ));
        }
        if (self.layer_norm_eps - 1e-5).abs() > 1e-12 {
            return Err(format!(
                "layer_norm_eps {}: only 1e-5 (CLIP's) is implemented",
                self.layer_norm_eps
            ));
        }
        let dims = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.max_position_embeddings,
        ];
        if dims.iter().any(|&d| d == 0 || d > MAX_DIM)
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "sizes {dims:?} are out of range (or the width does not split into the heads)"
            ));
        }
        Ok(ClipTextConfig {
            vocab_size: self.vocab_size,
            embed_dim: self.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim: self.projection_dim,
        })
    }
}

/// An encoded prompt: one row.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// T5 tokens `[1, S, D]`.
    pub tokens: Tensor,
    /// CLIP pooled `[1, P]`.
    pub pooled: Tensor,
}

impl PromptEmbeds {
    /// For `batch` items, with the guidance scale for models that embed it.
    pub fn conditioning(
        &self,
        batch: usize,
        guidance: Option<f64>,
    ) -> candle_core::Result<TextConditioning> {
        TextConditioning {
            tokens: self.tokens.clone(),
            pooled: self.pooled.clone(),
            guidance: None,
        }
        .repeat(batch, guidance)
    }
}

/// Ids of one prompt through both tokenizers, for tests and the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptIds {
    pub clip: Vec<u32>,
    pub t5: Vec<u32>,
}

/// CLIP + T5 with their tokenizers.
pub struct PromptEncoder {
    clip_tokenizer: PromptTokenizer,
    clip: ClipTextTransformer,
    clip_eos: u32,
    t5_tokenizer: PromptTokenizer,
    /// candle's T5 keeps a (for an encoder unused) cache behind `&mut self`.
    t5: Mutex<t5::T5EncoderModel>,
    device: Device,
    memo: Mutex<HashMap<(String, usize), Arc<PromptEmbeds>>>,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEncoder")
            .field("clip_max_length", &self.clip_tokenizer.max_length)
            .field("t5_max_length", &self.t5_tokenizer.max_length)
            .finish_non_exhaustive()
    }
}

/// Where a pipeline's text encoders are.
#[derive(Clone)]
pub struct EncoderFiles<'a> {
    pub clip_config: &'a ClipFields,
    pub clip_weights: VarBuilder<'a>,
    pub clip_tokenizer: PromptTokenizer,
    pub t5_config: &'a t5::Config,
    pub t5_weights: VarBuilder<'a>,
    pub t5_tokenizer: PromptTokenizer,
}

impl PromptEncoder {
    /// Builds both encoders. The T5 tokenizer's length is the default `max_sequence_length`;
    /// [`PromptEncoder::encode`] may ask for another.
    pub fn new(files: EncoderFiles<'_>, device: &Device) -> Result<Self, String> {
        let clip_config = files.clip_config.check()?;
        // transformers 4 saves `text_model.`-prefixed names (FLUX.1's own files), 5 does not.
        let clip_weights = if files
            .clip_weights
            .contains_tensor("text_model.embeddings.token_embedding.weight")
        {
            files.clip_weights.pp("text_model")
        } else {
            files.clip_weights
        };
        let clip = ClipTextTransformer::new(clip_weights, &clip_config)
            .map_err(|e| format!("CLIP text encoder: {e}"))?;
        let t5 = t5::T5EncoderModel::load(files.t5_weights, files.t5_config)
            .map_err(|e| format!("T5 encoder: {e}"))?;
        if files.clip_tokenizer.max_length > clip_config.max_position_embeddings {
            return Err(format!(
                "the CLIP tokenizer pads to {} tokens but the encoder has {} positions",
                files.clip_tokenizer.max_length, clip_config.max_position_embeddings
            ));
        }
        Ok(PromptEncoder {
            clip_tokenizer: files.clip_tokenizer,
            clip,
            clip_eos: files.clip_config.eos_token_id,
            t5_tokenizer: files.t5_tokenizer,
            t5: Mutex::new(t5),
            device: device.clone(),
            memo: Mutex::new(HashMap::new()),
        })
    }

    /// The T5 length the pipeline pads to when nobody asks otherwise.
    pub fn default_sequence_length(&self) -> usize {
        self.t5_tokenizer.max_length
    }

    /// Both tokenizations of `prompt`, T5's padded to `t5_length`.
    pub fn ids(&self, prompt: &str, t5_length: usize) -> Result<PromptIds, String> {
        let t5 = if t5_length == self.t5_tokenizer.max_length {
            self.t5_tokenizer.ids(prompt)?
        } else {
            self.t5_tokenizer.with_max_length(t5_length)?.ids(prompt)?
        };
        Ok(PromptIds {
            clip: self.clip_tokenizer.ids(prompt)?,
            t5,
        })
    }

    /// `prompt` encoded (T5 padded to `t5_length` tokens), from the memo when it was before.
    pub fn encode(&self, prompt: &str, t5_length: usize) -> Result<Arc<PromptEmbeds>, String> {
        let key = (prompt.to_string(), t5_length);
        if let Some(hit) = self.memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(hit);
        }
        let ids = self.ids(prompt, t5_length)?;
        let embeds = Arc::new(
            self.run(&ids)
                .map_err(|e| format!("encoding {prompt:?}: {e}"))?,
        );
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(key, embeds.clone());
        }
        Ok(embeds)
    }

    fn run(&self, ids: &PromptIds) -> candle_core::Result<PromptEmbeds> {
        let clip_ids = Tensor::new(ids.clip.as_slice(), &self.device)?.unsqueeze(0)?;
        let hidden = self.clip.forward_with_mask(&clip_ids, usize::MAX)?;
        // transformers' pooling: the first eos position (by the largest id for the legacy
        // eos id 2), as torch's argmax picks the first maximum.
        let position = if self.clip_eos == 2 {
            let max = ids.clip.iter().copied().max().unwrap_or(0);
            ids.clip.iter().position(|&id| id == max)
        } else {
            ids.clip.iter().position(|&id| id == self.clip_eos)
        }
        .unwrap_or(0);
        let pooled = hidden.i((.., position))?.to_dtype(DType::F32)?;
        let t5_ids = Tensor::new(ids.t5.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut t5 = self
            .t5
            .lock()
            .map_err(|_| candle_core::Error::msg("the T5 encoder was poisoned by a panic"))?;
        let tokens = t5.forward(&t5_ids)?.to_dtype(DType::F32)?;
        t5.clear_kv_cache();
        Ok(PromptEmbeds { tokens, pooled })
    }
}
