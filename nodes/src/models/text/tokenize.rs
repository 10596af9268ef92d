//! A pipeline's tokenizer (`tokenizer/tokenizer.json` read by the `tokenizers` crate) with the
//! padding and truncation diffusers asks of it: `padding="max_length"`, `truncation=True`.

use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Largest `tokenizer_config.json` read (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `tokenizer.json` read (T5's is 2.4 MB, CLIP's 3.6 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// A tokenizer that always gives `max_length` ids.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pub max_length: usize,
    pub pad_id: u32,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> String {
    format!("{}: {message}", path.display())
}

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": …}`.
fn token_text(value: &serde_json::Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("content").and_then(|c| c.as_str()))
}

impl PromptTokenizer {
    /// Reads `dir/tokenizer.json` and the pad token from `dir/tokenizer_config.json`;
    /// `max_length` = `model_max_length` there unless given (T5's `max_sequence_length`).
    pub fn read(dir: &Path, max_length: Option<usize>) -> Result<Self, String> {
        let json = dir.join("tokenizer.json");
        let text = crate::safe_io::read_text_bounded(&json, MAX_TOKENIZER_BYTES)
            .map_err(|e| bad(&json, e))?;
        let tokenizer = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| bad(&json, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() {
            let text = crate::safe_io::read_text_bounded(&config_path, MAX_CONFIG_BYTES)
                .map_err(|e| bad(&config_path, e))?;
            serde_json::from_str(&text).map_err(|e| bad(&config_path, e))?
        } else {
            serde_json::Value::Null
        };
        let pad = config.get("pad_token").and_then(token_text);
        let pad_id = match pad {
            Some(token) => tokenizer.token_to_id(token).ok_or_else(|| {
                bad(
                    &config_path,
                    format!("pad token {token:?} is not in the vocabulary"),
                )
            })?,
            None => 0,
        };
        let max_length = match max_length {
            Some(n) => n,
            None => config
                .get("model_max_length")
                .and_then(|v| v.as_u64())
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= 1 << 16)
                .ok_or_else(|| {
                    bad(
                        &config_path,
                        "no model_max_length (how many tokens to pad to)",
                    )
                })?,
        };
        if max_length == 0 {
            return Err(bad(&json, "a prompt of zero tokens cannot be encoded"));
        }
        Self::new(tokenizer, max_length, pad_id, pad.unwrap_or("<pad>")).map_err(|e| bad(&json, e))
    }

    fn new(
        mut tokenizer: Tokenizer,
        max_length: usize,
        pad_id: u32,
        pad_token: &str,
    ) -> Result<Self, String> {
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| e.to_string())?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            pad_id,
            pad_token: pad_token.to_string(),
            ..PaddingParams::default()
        }));
        Ok(PromptTokenizer {
            tokenizer,
            max_length,
            pad_id,
        })
    }

    /// The same tokenizer padding and truncating to `max_length` tokens.
    pub fn with_max_length(&self, max_length: usize) -> Result<Self, String> {
        let pad_token = self
            .tokenizer
            .id_to_token(self.pad_id)
            .unwrap_or_else(|| "<pad>".to_string());
        Self::new(self.tokenizer.clone(), max_length, self.pad_id, &pad_token)
    }

    /// `max_length` ids for `prompt`, special tokens added.
    pub fn ids(&self, prompt: &str) -> Result<Vec<u32>, String> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| format!("tokenizing {prompt:?}: {e}"))?;
        let ids = encoding.get_ids().to_vec();
        if ids.len() != self.max_length {
            return Err(format!(
                "tokenizing {prompt:?} gave {} ids where {} were asked",
                ids.len(),
                self.max_length
            ));
        }
        Ok(ids)
    }
}
