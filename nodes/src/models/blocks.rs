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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The plain forward: embed, every block in run order, finish.
pub fn forward<M: BlockTransformer + ?Sized>(
    model: &M,
    x: &Tensor,
    timesteps: &Tensor,
    cond: &Conditioning,
) -> Result<Tensor> {
    let (mut streams, call) = model.embed(x, timesteps, cond)?;
    for at in run_order(model.block_lists()) {
        streams = model.block(at, &streams, &call)?;
    }
    model.finish(&streams, &call)
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
