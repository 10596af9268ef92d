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

/// Each signature with the parts every config shares left out (`_`-separated parts), so a
/// label says what the config changes: `DBCache_F1B0_R0.04_N0.001` and
/// `DBCache_F2B0_R0.08_N0.001` read `F1B0_R0.04` and `F2B0_R0.08`. A signature left empty
/// (all configs alike, or only one) is kept whole.
pub fn distinct_parts(signatures: &[&str]) -> Vec<String> {
    let parts: Vec<Vec<&str>> = signatures.iter().map(|s| s.split('_').collect()).collect();
    let shared = |part: &str| signatures.len() > 1 && parts.iter().all(|p| p.contains(&part));
    parts
        .iter()
        .zip(signatures)
        .map(|(own, whole)| {
            let kept: Vec<&str> = own.iter().copied().filter(|p| !shared(p)).collect();
            if kept.is_empty() {
                whole.to_string()
            } else {
                kept.join("_")
            }
        })
        .collect()
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
/// `scale` times (at least 1), with column numbers and a legend.
pub fn labelled_grid(c: &Comparison, scale: u32) -> Result<RgbImage, String> {
    grid(c, scale, true)
}

/// The same grid with nothing but the images and the gaps between them (the node's preview).
pub fn plain_grid(c: &Comparison) -> Result<RgbImage, String> {
    grid(c, 1, false)
}

/// The one layout both grids share: `labelled` adds the margin, the column numbers and the
/// legend.
fn grid(c: &Comparison, scale: u32, labelled: bool) -> Result<RgbImage, String> {
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
    let lines: Vec<String> = if labelled {
        table.iter().map(legend).collect()
    } else {
        Vec::new()
    };
    let (margin, header) = if labelled {
        (MARGIN, GLYPH + GAP)
    } else {
        (0, 0)
    };
    let grid_w = cols * w + (cols - 1) * GAP;
    let grid_h = rows * h + (rows - 1) * GAP;
    let legend_w = lines
        .iter()
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0)
        * GLYPH;
    let legend_h = if labelled {
        GAP * 2 + lines.len() as u32 * (GLYPH + GAP)
    } else {
        0
    };
    let width = 2 * margin + grid_w.max(legend_w);
    let height = 2 * margin + header + grid_h + legend_h;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > 64 << 20 {
        return Err(format!(
            "a {width}×{height} grid is too large; lower grid_scale"
        ));
    }
    let mut canvas = Canvas::new(width, height);
    for (col, (cell, row)) in columns.iter().zip(&table).enumerate() {
        let x = margin + col as u32 * (w + GAP);
        if labelled {
            let name = label(&row.cell);
            let centre = (w.saturating_sub(name.chars().count() as u32 * GLYPH)) / 2;
            canvas.text(x + centre, margin, name);
        }
        for (r, sample) in cell.samples.iter().enumerate() {
            canvas.image(
                x,
                margin + header + r as u32 * (h + GAP),
                &sample.image,
                scale,
            );
        }
    }
    let mut y = margin + header + grid_h + GAP * 2;
    for line in &lines {
        canvas.text(margin, y, line);
        y += GLYPH + GAP;
    }
    RgbImage::new(canvas.width, canvas.height, canvas.pixels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::SampleOutcome;

    #[test]
    fn a_label_keeps_only_what_differs_between_configs() {
        let sweep = [
            "DBCache_F1B0_W4I1M0MC3_R0.04_N0.001",
            "DBCache_F2B0_W4I1M0MC3_R0.04_N0.001",
            "DBCache_F1B0_W4I1M0MC3_R0.08_N0.001",
        ];
        assert_eq!(
            distinct_parts(&sweep),
            ["F1B0_R0.04", "F2B0_R0.04", "F1B0_R0.08"]
        );
        let strategies = [
            "Fixed_F4B0_W4K2_N0.001",
            "DBCache_F4B0_W4I1M0MC3_R0.12_N0.001",
            "DBCache_F4B0_W4I1M0MC3_R0.12_T1O1_N0.001",
        ];
        assert_eq!(
            distinct_parts(&strategies),
            [
                "Fixed_W4K2",
                "DBCache_W4I1M0MC3_R0.12",
                "DBCache_W4I1M0MC3_R0.12_T1O1"
            ]
        );
        // Alike or alone: the whole signature.
        assert_eq!(distinct_parts(&["A_B", "A_B"]), ["A_B", "A_B"]);
        assert_eq!(distinct_parts(&["A_B"]), ["A_B"]);
    }

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

    #[test]
    fn the_plain_grid_is_the_images_and_gaps_only() {
        let c = Comparison {
            reference: result("NoCache", 10, None),
            cells: vec![result("Fixed_F4B0", 200, Some(30.0))],
            rounds: 1,
            load_average: None,
        };
        let img = plain_grid(&c).unwrap();
        assert_eq!((img.width, img.height), (4 + GAP + 4, 2));
        let px = |x: u32| img.pixels[(x * 3) as usize];
        assert_eq!(
            [px(0), px(3), px(4), px(4 + GAP)],
            [10, 10, BACKGROUND[0], 200]
        );
    }
}
