//! The block contract between a model family and the step cache: a model is embed → its block
//! lists in run order → finish, each block mapping streams (image tokens, and text tokens for
//! joint blocks) to streams. The cache and the denoise loop know models only through this
//! (cache-dit's `BlockAdapter` + `ForwardPattern`, ALGORITHMS.md §1.1).

use candle_core::{DType, Device, Result, Tensor};

/// What flows between blocks.
#[derive(Debug, Clone)]
pub struct Streams {
    /// Image tokens `[B, N, hidden]`: the stream the step cache's indicator reads.
    pub hidden: Tensor,
    /// Text tokens `[B, M, hidden]`, for families with joint blocks; `None` for image-only
    /// models.
    pub encoder: Option<Tensor>,
}

impl Streams {
    /// Image tokens only.
    pub fn image(hidden: Tensor) -> Self {
        Streams {
            hidden,
            encoder: None,
        }
    }

    /// Bytes held by the tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.hidden) + self.encoder.as_ref().map_or(0, size)
    }
}

/// Which streams a block reads and writes (cache-dit's forward patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPattern {
    /// Image tokens in and out; the text stream, if any, passes through unchanged
    /// (cache-dit Pattern_3: DiT, PixArt, FLUX.2 single blocks).
    Hidden,
    /// Image and text tokens in, both out (cache-dit Pattern_0/1: FLUX.1 double blocks, SD3
    /// joint blocks).
    Joint,
}

/// One named list of blocks (`transformer_blocks`, `single_transformer_blocks` …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockList {
    /// The checkpoint's name for the list.
    pub name: &'static str,
    pub len: usize,
    pub pattern: StreamPattern,
}

/// A block's place: which list, which block in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockAt {
    pub list: usize,
    pub index: usize,
}

/// The blocks in run order: every block of list 0, then of list 1, and so on. The step
/// cache partitions this flattened order into Fn / middle / Bn, as cache-dit does for FLUX.1
/// (its 19 double and 38 single blocks form one 57-block list, ALGORITHMS.md §1.1).
pub fn run_order(lists: &[BlockList]) -> Vec<BlockAt> {
    lists
        .iter()
        .enumerate()
        .flat_map(|(list, l)| (0..l.len).map(move |index| BlockAt { list, index }))
        .collect()
}

/// The number of blocks over every list.
pub fn total_blocks(lists: &[BlockList]) -> usize {
    lists.iter().map(|l| l.len).sum()
}

/// The output of a block's attention module (after its output projection, before the gated
/// residual): what attention-level caching (PAB, FasterCache) stores and serves.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// The image stream's attention output (a single-stream block's whole joint sequence).
    pub hidden: Tensor,
    /// The text stream's, for joint attention with separate stream outputs (FLUX.1 double
    /// blocks).
    pub encoder: Option<Tensor>,
}

impl AttentionOutput {
    pub fn image(hidden: Tensor) -> Self {
        AttentionOutput {
            hidden,
            encoder: None,
        }
    }

    /// Bytes held by the tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.hidden) + self.encoder.as_ref().map_or(0, size)
    }

    /// Applies `f` to each tensor (hidden, then encoder).
    pub fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<AttentionOutput> {
        Ok(AttentionOutput {
            hidden: f(&self.hidden)?,
            encoder: self.encoder.as_ref().map(&f).transpose()?,
        })
    }

    /// Combines each tensor with the matching one of `other` (hidden with hidden, encoder with
    /// encoder).
    pub fn zip(
        &self,
        other: &AttentionOutput,
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<AttentionOutput> {
        let encoder = match (&self.encoder, &other.encoder) {
            (Some(a), Some(b)) => Some(f(a, b)?),
            (None, None) => None,
            _ => candle_core::bail!("attention outputs differ in their streams"),
        };
        Ok(AttentionOutput {
            hidden: f(&self.hidden, &other.hidden)?,
            encoder,
        })
    }
}

/// Runs around every attention module of a block: gets the block's place and the module's
/// computation, returns the output the block goes on with (computed, or served from a cache).
pub trait AttentionHook {
    fn attention(
        &mut self,
        at: BlockAt,
        compute: &mut dyn FnMut() -> Result<AttentionOutput>,
    ) -> Result<AttentionOutput>;
}

/// The attention module's share of a block's multiply-adds for a joint sequence of `tokens`
/// tokens of width `dim`: q/k/v and output projections (4·d²·n) and the scores and their
/// weighted sum (2·n²·d), against those plus the feed-forward's 8·d²·n (`mlp_dd` = 8) — DiT
/// blocks and FLUX.1 double blocks; single blocks have q/k/v (3·d²·n) in the module and
/// feed-forward plus a wider output projection (9·d²·n) outside.
pub fn attention_share(tokens: usize, dim: usize, in_module_dd: f64, outside_dd: f64) -> f64 {
    let (n, d) = (tokens as f64, dim as f64);
    let module = in_module_dd * d * d * n + 2.0 * n * n * d;
    let rest = outside_dd * d * d * n;
    if module + rest <= 0.0 {
        0.0
    } else {
        module / (module + rest)
    }
}

/// What a call is conditioned on.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// Class labels `[B]` (u32); class-conditional models have a null class for guidance.
    Class(Tensor),
    /// An encoded prompt (FLUX.1: T5 tokens and the pooled CLIP embedding).
    Text(TextConditioning),
}

/// An encoded prompt, one row per batch item.
#[derive(Debug, Clone)]
pub struct TextConditioning {
    /// The sequence encoder's tokens `[B, S, D]` (T5).
    pub tokens: Tensor,
    /// The pooled embedding `[B, P]` (CLIP).
    pub pooled: Tensor,
    /// The distilled guidance scale `[B]` for models that embed it (FLUX.1-dev).
    pub guidance: Option<Tensor>,
}

impl TextConditioning {
    /// The same prompt for `batch` items, with `guidance` (f32, on the prompt's device) for
    /// models that embed it.
    pub fn repeat(&self, batch: usize, guidance: Option<f64>) -> Result<TextConditioning> {
        let rows = |t: &Tensor| -> Result<Tensor> {
            let first = t.narrow(0, 0, 1)?;
            Tensor::cat(&vec![&first; batch], 0)
        };
        Ok(TextConditioning {
            tokens: rows(&self.tokens)?,
            pooled: rows(&self.pooled)?,
            guidance: match guidance {
                Some(g) => Some(Tensor::full(g as f32, batch, self.pooled.device())?),
                None => None,
            },
        })
    }
}

impl Conditioning {
    /// Class labels, one per batch item, on `device`.
    pub fn classes(labels: Vec<u32>, device: &Device) -> Result<Conditioning> {
        let n = labels.len();
        Ok(Conditioning::Class(Tensor::from_vec(labels, n, device)?))
    }

    /// How many batch items it conditions.
    pub fn batch(&self) -> Result<usize> {
        match self {
            Conditioning::Class(labels) => labels.dims1(),
            Conditioning::Text(text) => Ok(text.pooled.dims2()?.0),
        }
    }

    /// Items `start..start + len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Conditioning> {
        Ok(match self {
            Conditioning::Class(labels) => Conditioning::Class(labels.narrow(0, start, len)?),
            Conditioning::Text(t) => Conditioning::Text(TextConditioning {
                tokens: t.tokens.narrow(0, start, len)?,
                pooled: t.pooled.narrow(0, start, len)?,
                guidance: t
                    .guidance
                    .as_ref()
                    .map(|g| g.narrow(0, start, len))
                    .transpose()?,
            }),
        })
    }

    /// `a`'s items then `b`'s (batched classifier-free guidance).
    pub fn cat(a: &Conditioning, b: &Conditioning) -> Result<Conditioning> {
        match (a, b) {
            (Conditioning::Class(a), Conditioning::Class(b)) => {
                Ok(Conditioning::Class(Tensor::cat(&[a, b], 0)?))
            }
            (Conditioning::Text(a), Conditioning::Text(b)) => {
                let guidance = match (&a.guidance, &b.guidance) {
                    (Some(ga), Some(gb)) => Some(Tensor::cat(&[ga, gb], 0)?),
                    (None, None) => None,
                    _ => candle_core::bail!("guidance on one half of a batch only"),
                };
                Ok(Conditioning::Text(TextConditioning {
                    tokens: Tensor::cat(&[&a.tokens, &b.tokens], 0)?,
                    pooled: Tensor::cat(&[&a.pooled, &b.pooled], 0)?,
                    guidance,
                }))
            }
            _ => candle_core::bail!("cannot batch a class and a prompt conditioning"),
        }
    }
}

/// The latent a model denoises, as the sampler needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentSpec {
    /// Channels of the input (the output may have more: learned-sigma channels are dropped).
    pub channels: usize,
    /// The native size (height, width).
    pub sample_size: (usize, usize),
    /// Height and width must be multiples of this (the patch size).
    pub multiple: usize,
    /// Classes for class-conditional models (the null class is this number).
    pub classes: Option<usize>,
}

/// A transformer that runs block by block. Embed, block, finish, the null conditioning and
/// the optional probe are the whole contract; the plain forward is [`forward`].
pub trait BlockTransformer {
    /// What one call computes once and every block reads (timestep and class embeddings,
    /// RoPE tables, the token grid).
    type Call;

    /// The block lists, in run order.
    fn block_lists(&self) -> &[BlockList];

    fn latent(&self) -> LatentSpec;

    fn device(&self) -> &Device;

    fn dtype(&self) -> DType;

    /// `x`: `[B, C, H, W]`; `timesteps`: `[B]`.
    fn embed(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<(Streams, Self::Call)>;

    /// Runs one block. A [`StreamPattern::Hidden`] block returns the text stream unchanged.
    fn block(&self, at: BlockAt, streams: &Streams, call: &Self::Call) -> Result<Streams>;

    /// Output head: `[B, out_channels, H, W]`.
    fn finish(&self, streams: &Streams, call: &Self::Call) -> Result<Tensor>;

    /// The unconditional input for guidance (the null class); text models have none of
    /// their own (their negative prompt is encoded by the caller) and say so.
    fn null_conditioning(&self, batch: usize) -> Result<Conditioning>;

    /// Whether the model takes the guidance scale as an input (FLUX.1-dev) instead of running
    /// classifier-free guidance.
    fn embeds_guidance(&self) -> bool {
        false
    }

    /// TeaCache's fitted rescale polynomial for this family (highest power first), when one
    /// was published; `None` = no rescaling until calibrated.
    fn rescale_coefficients(&self) -> Option<&'static [f64]> {
        None
    }

    /// MagCache's calibrated magnitude ratios for this family (one per step of its reference
    /// run, resampled to the step count), when published; `None` = calibrate first.
    fn mag_ratios(&self) -> Option<&'static [f64]> {
        None
    }

    /// The timestep-modulated input of the first block, for indicators that read it
    /// (TeaCache); `None` when the family does not expose it.
    fn modulated_input(&self, _streams: &Streams, _call: &Self::Call) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Runs one block with `hook` around its attention module (attention-level caching:
    /// PAB, FasterCache); `None` when the family exposes no attention seam.
    fn block_with_attention(
        &self,
        _at: BlockAt,
        _streams: &Streams,
        _call: &Self::Call,
        _hook: &mut dyn AttentionHook,
    ) -> Result<Option<Streams>> {
        Ok(None)
    }

    /// The call for running blocks on a subset of the image tokens (`image_tokens`, u32
    /// indices in token order; the text stream whole), for token-level caching (FastCache);
    /// `None` when the family cannot (its blocks depend on the token grid in ways the call does
    /// not carry).
    fn restrict_tokens(
        &self,
        _call: &Self::Call,
        _image_tokens: &Tensor,
    ) -> Result<Option<Self::Call>>
    where
        Self::Call: Sized,
    {
        Ok(None)
    }

    /// The attention module's share of the work of the block at `at` on these streams (for
    /// the ideal speedup of attention-level caching); 0 without an attention seam.
    fn attention_share(&self, _at: BlockAt, _streams: &Streams) -> f64 {
        0.0
    }
}

/// The plain forward: embed, every block in run order, finish.
pub fn forward<M: BlockTransformer + ?Sized>(
    model: &M,
    x: &Tensor,
    timesteps: &Tensor,
    cond: &Conditioning,
) -> Result<Tensor> {
    let (streams, call) = model.embed(x, timesteps, cond)?;
    let streams = run_all(model, streams, &call)?;
    model.finish(&streams, &call)
}

/// Every block in run order on embedded `streams`: the plain forward between embed and finish.
pub fn run_all<M: BlockTransformer + ?Sized>(
    model: &M,
    mut streams: Streams,
    call: &M::Call,
) -> Result<Streams> {
    for at in run_order(model.block_lists()) {
        streams = model.block(at, &streams, call)?;
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_order_is_every_list_in_turn() {
        let lists = [
            BlockList {
                name: "transformer_blocks",
                len: 2,
                pattern: StreamPattern::Joint,
            },
            BlockList {
                name: "single_transformer_blocks",
                len: 3,
                pattern: StreamPattern::Hidden,
            },
        ];
        let order: Vec<(usize, usize)> = run_order(&lists)
            .iter()
            .map(|a| (a.list, a.index))
            .collect();
        assert_eq!(order, [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(total_blocks(&lists), 5);
    }
}
