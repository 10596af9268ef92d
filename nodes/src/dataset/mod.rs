//! The project's own dataset: seeded procedural scenes in ten classes, for training the
//! embedded default model and its quality classifier.

pub mod raster;
pub mod scenes;

use crate::image::{ImageError, RgbImage};

/// A grid of samples: one row per class, `per_class` columns (seeds 0..), 1-pixel gaps,
/// each tile magnified `zoom` times for viewing.
pub fn sample_grid(per_class: usize, size: usize, zoom: usize) -> Result<RgbImage, ImageError> {
    let classes = scenes::CLASSES.len();
    let tile = size * zoom + 1;
    let (w, h) = (per_class * tile + 1, classes * tile + 1);
    let mut pixels = vec![255u8; w * h * 3];
    for label in 0..classes {
        for col in 0..per_class {
            let img = scenes::draw(label, col as u64, size);
            for y in 0..size * zoom {
                for x in 0..size * zoom {
                    let src = ((y / zoom) * size + x / zoom) * 3;
                    let (gx, gy) = (1 + col * tile + x, 1 + label * tile + y);
                    let dst = (gy * w + gx) * 3;
                    pixels[dst..dst + 3].copy_from_slice(&img[src..src + 3]);
                }
            }
        }
    }
    RgbImage::new(w as u32, h as u32, pixels)
}
