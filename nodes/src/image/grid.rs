//! Tiles rows of equally sized images into one grid image (1-pixel white gaps), each tile
//! magnified by an integer zoom for viewing.

use super::{ImageError, RgbImage};

/// A grid with one row per entry of `rows`; rows may be ragged (missing tiles stay white).
pub fn tile_grid(rows: &[Vec<RgbImage>], zoom: usize) -> Result<RgbImage, ImageError> {
    let zoom = zoom.max(1);
    let first = rows.iter().flatten().next();
    let (tw, th) = first.map_or((0, 0), |i| (i.width as usize, i.height as usize));
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (cell_w, cell_h) = (tw * zoom + 1, th * zoom + 1);
    let (w, h) = (cols * cell_w + 1, rows.len() * cell_h + 1);
    let mut pixels = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            img.check_len()?;
            if (img.width as usize, img.height as usize) != (tw, th) {
                return Err(ImageError::Mismatch(format!(
                    "grid tiles must share one size: {tw}×{th} vs {}×{}",
                    img.width, img.height
                )));
            }
            for y in 0..th * zoom {
                for x in 0..tw * zoom {
                    let src = ((y / zoom) * tw + x / zoom) * 3;
                    let (gx, gy) = (1 + c * cell_w + x, 1 + r * cell_h + y);
                    let dst = (gy * w + gx) * 3;
                    pixels[dst..dst + 3].copy_from_slice(&img.pixels[src..src + 3]);
                }
            }
        }
    }
    RgbImage::new(w as u32, h as u32, pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_tiles_with_gaps_and_zoom() -> Result<(), ImageError> {
        let red = RgbImage::new(1, 1, vec![255, 0, 0])?;
        let blue = RgbImage::new(1, 1, vec![0, 0, 255])?;
        let grid = tile_grid(&[vec![red.clone(), blue], vec![red]], 2)?;
        assert_eq!((grid.width, grid.height), (7, 7));
        assert_eq!(grid.pixel(0, 0), Some([255, 255, 255]));
        assert_eq!(grid.pixel(1, 1), Some([255, 0, 0]));
        assert_eq!(grid.pixel(2, 2), Some([255, 0, 0]));
        assert_eq!(grid.pixel(4, 1), Some([0, 0, 255]));
        assert_eq!(
            grid.pixel(4, 4),
            Some([255, 255, 255]),
            "missing tile stays white"
        );
        Ok(())
    }
}
