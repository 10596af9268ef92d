//! The project's own dataset: seeded procedural scenes in ten classes, for training the
//! embedded default model and its quality classifier.

pub mod raster;
pub mod scenes;

use crate::image::grid::tile_grid;
use crate::image::{ImageError, RgbImage};

/// A grid of samples: one row per class, `per_class` columns (seeds 0..), 1-pixel gaps,
/// each tile magnified `zoom` times for viewing.
pub fn sample_grid(per_class: usize, size: usize, zoom: usize) -> Result<RgbImage, ImageError> {
    let rows = (0..scenes::CLASSES.len())
        .map(|label| {
            (0..per_class)
                .map(|seed| {
                    RgbImage::new(
                        size as u32,
                        size as u32,
                        scenes::draw(label, seed as u64, size),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    tile_grid(&rows, zoom)
}
