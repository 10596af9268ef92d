//! The comparison grid as an image to keep: cells enlarged without smoothing, a number over
//! each column (`ref`, 1, 2 …, as in the table) and a legend under the grid giving each
//! number's config signature, speedup and quality, drawn with an 8×8 bitmap font.

use super::table::Row;
use super::{CellResult, Comparison};
use crate::image::RgbImage;
use font8x8::UnicodeFonts;

const GLYPH: u32 = 8;
const GAP: u32 = 2;
const MARGIN: u32 = 4;
const BACKGROUND: [u8; 3] = [24, 24, 24];
const INK: [u8; 3] = [230, 230, 230];

struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            pixels.extend_from_slice(&BACKGROUND);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    fn put(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = ((y * self.width + x) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    /// `text` with its top-left at (x, y); characters the font lacks draw as '?'.
    fn text(&mut self, x: u32, y: u32, text: &str) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS
                .get(ch)
                .or_else(|| font8x8::BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.put(x + i as u32 * GLYPH + col, y + row as u32, INK);
                    }
                }
            }
        }
    }

    /// `image` enlarged `scale` times (nearest neighbour) with its top-left at (x, y).
    fn image(&mut self, x: u32, y: u32, image: &RgbImage, scale: u32) {
        for sy in 0..image.height * scale {
            for sx in 0..image.width * scale {
                let i = (((sy / scale) * image.width + sx / scale) * 3) as usize;
                let rgb = [image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]];
                self.put(x + sx, y + sy, rgb);
            }
        }
    }
}

/// A legend line for a table row: number, signature, speedup and PSNR.
fn legend(row: &Row) -> String {
    let speedup = row
        .speedup
        .map_or(String::new(), |s| format!("  {:.2}x", s.median));
    let psnr = row
        .psnr_db
        .map_or(String::new(), |p| format!("  {:.1} dB", p.median));
    format!("{:<4}{}{speedup}{psnr}", label(&row.cell), row.signature)
}

fn label(cell: &str) -> &str {
    if cell == "reference" {
        "ref"
    } else {
        cell
    }
}

/// The labelled grid: rows are samples, columns the reference then each cell, enlarged
/// `scale` times (at least 1).
pub fn labelled_grid(c: &Comparison, scale: u32) -> Result<RgbImage, String> {
    let scale = scale.max(1);
    let first = c
        .reference
        .samples
        .first()
        .ok_or("the comparison has no samples")?;
    let (w, h) = (first.image.width * scale, first.image.height * scale);
    let columns: Vec<&CellResult> = std::iter::once(&c.reference).chain(&c.cells).collect();
    let rows = c.reference.samples.len() as u32;
    let cols = columns.len() as u32;
    let table = super::table::rows(c);
    let lines: Vec<String> = table.iter().map(legend).collect();
    let header = GLYPH + GAP;
    let grid_w = cols * w + (cols - 1) * GAP;
    let grid_h = rows * h + (rows - 1) * GAP;
    let legend_w = lines
        .iter()
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0)
        * GLYPH;
    let width = 2 * MARGIN + grid_w.max(legend_w);
    let height = 2 * MARGIN + header + grid_h + GAP * 2 + lines.len() as u32 * (GLYPH + GAP);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > 64 << 20 {
        return Err(format!(
            "a {width}×{height} grid is too large; lower grid_scale"
        ));
    }
    let mut canvas = Canvas::new(width, height);
    for (col, (cell, row)) in columns.iter().zip(&table).enumerate() {
        let x = MARGIN + col as u32 * (w + GAP);
        let name = label(&row.cell);
        let centre = (w.saturating_sub(name.chars().count() as u32 * GLYPH)) / 2;
        canvas.text(x + centre, MARGIN, name);
        for (r, sample) in cell.samples.iter().enumerate() {
            canvas.image(
                x,
                MARGIN + header + r as u32 * (h + GAP),
                &sample.image,
                scale,
            );
        }
    }
    let mut y = MARGIN + header + grid_h + GAP * 2;
    for line in &lines {
        canvas.text(MARGIN, y, line);
        y += GLYPH + GAP;
    }
    RgbImage::new(canvas.width, canvas.height, canvas.pixels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::SampleOutcome;

    fn result(signature: &str, shade: u8, psnr: Option<f64>) -> CellResult {
        let mut r = CellResult::new(signature.to_string());
        r.samples.push(SampleOutcome {
            seed: 1,
            class: 0,
            image: RgbImage::new(4, 2, vec![shade; 24]).unwrap(),
            psnr_db: psnr,
            ssim: psnr.map(|_| 0.9),
            feature_distance: None,
        });
        r
    }

    #[test]
    fn cells_are_enlarged_exactly_under_their_numbers_with_a_legend() {
        let c = Comparison {
            reference: result("NoCache", 10, None),
            cells: vec![result("Fixed_F4B0", 200, Some(30.0))],
            rounds: 1,
            load_average: None,
        };
        let img = labelled_grid(&c, 3).unwrap();
        let px = |x: u32, y: u32| {
            let i = ((y * img.width + x) * 3) as usize;
            [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
        };
        let top = MARGIN + GLYPH + GAP;
        // Every pixel of each 12×6 enlarged cell is the source's.
        for y in 0..6 {
            for x in 0..12 {
                assert_eq!(px(MARGIN + x, top + y), [10; 3]);
                assert_eq!(px(MARGIN + 12 + GAP + x, top + y), [200; 3]);
            }
        }
        // The legend is the widest part: "1   Fixed_F4B0  30.0 dB" in 8-pixel glyphs.
        assert_eq!(img.width, 2 * MARGIN + 23 * GLYPH);
        let ink = |y0: u32, y1: u32| (y0..y1).any(|y| (0..img.width).any(|x| px(x, y) == INK));
        assert!(ink(MARGIN, MARGIN + GLYPH), "column numbers are drawn");
        assert!(ink(top + 6 + 2 * GAP, img.height), "the legend is drawn");
        assert_eq!(
            legend(&crate::compare::table::rows(&c)[1]),
            "1   Fixed_F4B0  30.0 dB"
        );
    }
}
