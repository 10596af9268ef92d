//! A tiny seeded two-list model for testing the block contract: a list of joint blocks (image
//! and text tokens in, both out), then a list of image-only blocks, with a head that reads
//! both streams. Not a model of any checkpoint; its only job is to make the step cache's
//! partition across lists and its text-stream residual observable.

use super::blocks::{
    BlockAt, BlockList, BlockTransformer, Conditioning, LatentSpec, StreamPattern, Streams,
};
use crate::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, D};

/// Sizes of the test model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoListConfig {
    pub channels: usize,
    pub side: usize,
    pub width: usize,
    pub text_tokens: usize,
    pub classes: usize,
    pub joint_blocks: usize,
    pub image_blocks: usize,
}

impl Default for TwoListConfig {
    fn default() -> Self {
        TwoListConfig {
            channels: 2,
            side: 4,
            width: 8,
            text_tokens: 3,
            classes: 3,
            joint_blocks: 3,
            image_blocks: 3,
        }
    }
}

#[derive(Debug, Clone)]
struct JointBlock {
    image: Tensor,
    text: Tensor,
    image_from_text: Tensor,
    text_from_image: Tensor,
}

/// The model; every weight is drawn from one seed.
#[derive(Debug, Clone)]
pub struct TwoList {
    config: TwoListConfig,
    lists: [BlockList; 2],
    embed_in: Tensor,
    text_table: Tensor,
    time: Tensor,
    joint: Vec<JointBlock>,
    image: Vec<Tensor>,
    head: Tensor,
    head_text: Tensor,
    device: Device,
}

/// Per call: the timestep vector every block adds, the token grid.
#[derive(Debug, Clone)]
pub struct TwoListCall {
    time: Tensor,
    grid: (usize, usize),
}

impl TwoList {
    pub fn new(config: TwoListConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let w = config.width;
        let mut weight = |rows: usize, cols: usize| -> Result<Tensor> {
            rng.randn((rows, cols), device)? * (1.0 / (rows as f64).sqrt())
        };
        let joint = (0..config.joint_blocks)
            .map(|_| {
                Ok(JointBlock {
                    image: weight(w, w)?,
                    text: weight(w, w)?,
                    image_from_text: weight(w, w)?,
                    text_from_image: weight(w, w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let image = (0..config.image_blocks)
            .map(|_| weight(w, w))
            .collect::<Result<Vec<_>>>()?;
        Ok(TwoList {
            embed_in: weight(config.channels, w)?,
            text_table: weight((config.classes + 1) * config.text_tokens, w)?,
            time: weight(1, w)?,
            head: weight(w, config.channels)?,
            head_text: weight(w, config.channels)?,
            joint,
            image,
            lists: [
                BlockList {
                    name: "transformer_blocks",
                    len: config.joint_blocks,
                    pattern: StreamPattern::Joint,
                },
                BlockList {
                    name: "single_transformer_blocks",
                    len: config.image_blocks,
                    pattern: StreamPattern::Hidden,
                },
            ],
            config,
            device: device.clone(),
        })
    }

    /// `x [B, T, W] · w [W, V]`.
    fn project(x: &Tensor, w: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(w)
    }
}

impl BlockTransformer for TwoList {
    type Call = TwoListCall;

    fn block_lists(&self) -> &[BlockList] {
        &self.lists
    }

    fn latent(&self) -> LatentSpec {
        LatentSpec {
            channels: self.config.channels,
            sample_size: (self.config.side, self.config.side),
            multiple: 1,
            classes: Some(self.config.classes),
        }
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        DType::F32
    }

    fn embed(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> Result<(Streams, TwoListCall)> {
        let Conditioning::Class(labels) = cond else {
            candle_core::bail!(
                "the two-list test model is class-conditional: it takes class labels, not a prompt"
            )
        };
        let (b, c, h, w) = x.dims4()?;
        let tokens = x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let hidden = Self::project(&tokens, &self.embed_in)?;
        let n = self.config.text_tokens;
        let rows: Vec<u32> = labels
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|&l| (0..n as u32).map(move |i| l * n as u32 + i))
            .collect();
        let rows = Tensor::from_vec(rows, b * n, &self.device)?;
        let encoder = self
            .text_table
            .index_select(&rows, 0)?
            .reshape((b, n, self.config.width))?;
        // [B, 1, W]: t / 1000 times a learned direction.
        let time = (timesteps.to_dtype(DType::F32)? / 1000.0)?
            .reshape((b, 1, 1))?
            .broadcast_mul(&self.time.unsqueeze(0)?)?;
        Ok((
            Streams {
                hidden,
                encoder: Some(encoder),
            },
            TwoListCall { time, grid: (h, w) },
        ))
    }

    fn block(&self, at: BlockAt, s: &Streams, call: &TwoListCall) -> Result<Streams> {
        let h = &s.hidden;
        match at.list {
            0 => {
                let block = self
                    .joint
                    .get(at.index)
                    .ok_or_else(|| candle_core::Error::msg("no such joint block"))?;
                let Some(e) = &s.encoder else {
                    candle_core::bail!("a joint block needs the text stream");
                };
                let e_mean = e.mean_keepdim(1)?;
                let h_mean = h.mean_keepdim(1)?;
                let dh = (Self::project(h, &block.image)?
                    .broadcast_add(&Self::project(&e_mean, &block.image_from_text)?)?
                    .broadcast_add(&call.time)?)
                .tanh()?;
                let de = (Self::project(e, &block.text)?
                    .broadcast_add(&Self::project(&h_mean, &block.text_from_image)?)?)
                .tanh()?;
                Ok(Streams {
                    hidden: (h + dh)?,
                    encoder: Some((e + de)?),
                })
            }
            _ => {
                let w = self
                    .image
                    .get(at.index)
                    .ok_or_else(|| candle_core::Error::msg("no such image block"))?;
                let dh = Self::project(h, w)?.broadcast_add(&call.time)?.tanh()?;
                Ok(Streams {
                    hidden: (h + dh)?,
                    encoder: s.encoder.clone(),
                })
            }
        }
    }

    fn finish(&self, s: &Streams, call: &TwoListCall) -> Result<Tensor> {
        let b = s.hidden.dim(0)?;
        let mut out = Self::project(&s.hidden, &self.head)?;
        // The head reads the text stream too, so a stale text residual would show.
        if let Some(e) = &s.encoder {
            out = out.broadcast_add(&Self::project(&e.mean_keepdim(1)?, &self.head_text)?)?;
        }
        let (h, w) = call.grid;
        out.transpose(1, 2)?
            .reshape((b, self.config.channels, h, w))
    }

    fn null_conditioning(&self, batch: usize) -> Result<Conditioning> {
        Conditioning::classes(vec![self.config.classes as u32; batch], &self.device)
    }

    fn modulated_input(&self, s: &Streams, call: &TwoListCall) -> Result<Option<Tensor>> {
        Ok(Some(
            s.hidden.broadcast_add(&call.time)?.sum_keepdim(D::Minus1)?,
        ))
    }
}
