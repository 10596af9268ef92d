//! A small CNN that labels 32×32 scene images with one of the ten dataset classes: three
//! 3×3 conv + ReLU + 2×2 max-pool stages (32, 64, 128 channels), global average pool, linear.

use crate::image::convert::rgb_to_chw;
use crate::image::RgbImage;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use std::path::Path;

/// Channels after each conv stage.
pub const STAGES: [usize; 3] = [32, 64, 128];
/// Input side the classifier is trained for.
pub const IMAGE_SIZE: usize = 32;
/// Number of classes (the dataset's).
pub const NUM_CLASSES: usize = crate::dataset::scenes::CLASSES.len();

/// The shipped classifier weights (`cachedit train-classifier`, see models/scenes-dit/README.md).
const BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../../models/scene-classifier/classifier.safetensors");

#[derive(Debug, Clone)]
pub struct SceneClassifier {
    convs: Vec<Conv2d>,
    head: Linear,
}

impl SceneClassifier {
    /// Builds the network from `vb` (`conv{i}.weight/bias`, `head.weight/bias`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let mut convs = Vec::with_capacity(STAGES.len());
        let mut cin = 3;
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        for (i, &cout) in STAGES.iter().enumerate() {
            convs.push(candle_nn::conv2d(
                cin,
                cout,
                3,
                cfg,
                vb.pp(format!("conv{i}")),
            )?);
            cin = cout;
        }
        let head = candle_nn::linear(cin, NUM_CLASSES, vb.pp("head"))?;
        Ok(SceneClassifier { convs, head })
    }

    /// The weights that ship with the app (embedded in the binary).
    pub fn builtin(device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(BUILTIN_WEIGHTS, device)?;
        Self::new(VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// Every weight's name and shape, for seeded initialisation.
    pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        let mut cin = 3;
        for (i, &cout) in STAGES.iter().enumerate() {
            shapes.push((format!("conv{i}.weight"), vec![cout, cin, 3, 3]));
            shapes.push((format!("conv{i}.bias"), vec![cout]));
            cin = cout;
        }
        shapes.push(("head.weight".into(), vec![NUM_CLASSES, cin]));
        shapes.push(("head.bias".into(), vec![NUM_CLASSES]));
        shapes
    }

    /// Weights from a safetensors file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)?;
        Self::new(VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// Logits `[B, 10]` for images `[B, 3, 32, 32]` in `[-1, 1]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features(x)?)
    }

    /// The pooled features the head reads, `[B, 128]`: what the network has learned to tell
    /// scenes apart by, for a perceptual distance between two images.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.relu()?.max_pool2d(2)?;
        }
        h.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// [`SceneClassifier::features`] of each RGB image (32×32), one vector per image.
    pub fn embed(&self, images: &[RgbImage], device: &Device) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.features(&self.batch(images, device)?)?
            .to_vec2::<f32>()
    }

    /// The most likely class of each image `[B, 3, 32, 32]`.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        self.forward(x)?.argmax(D::Minus1)?.to_vec1::<u32>()
    }

    /// The most likely class of each RGB image (32×32).
    pub fn classify(&self, images: &[RgbImage], device: &Device) -> Result<Vec<u32>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.predict(&self.batch(images, device)?)
    }

    /// RGB images (32×32) as the network's input batch.
    fn batch(&self, images: &[RgbImage], device: &Device) -> Result<Tensor> {
        let mut data = Vec::with_capacity(images.len() * 3 * IMAGE_SIZE * IMAGE_SIZE);
        for img in images {
            if img.width as usize != IMAGE_SIZE || img.height as usize != IMAGE_SIZE {
                candle_core::bail!(
                    "the scene classifier takes {IMAGE_SIZE}×{IMAGE_SIZE} images, got {}×{}",
                    img.width,
                    img.height
                );
            }
            rgb_to_chw(&img.pixels, IMAGE_SIZE, &mut data);
        }
        Tensor::from_vec(data, (images.len(), 3, IMAGE_SIZE, IMAGE_SIZE), device)
    }
}
