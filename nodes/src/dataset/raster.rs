//! A tiny anti-aliased rasterizer for the scene generator: filled shapes with coverage
//! computed by supersampling, blended onto an RGB float canvas.

/// An RGB colour with components in [0, 1].
pub type Rgb = [f32; 3];

/// Linear mix of two colours (`t` = 0 → `a`, 1 → `b`).
pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// HSV (all in [0, 1]) to RGB.
pub fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h = (h.rem_euclid(1.0)) * 6.0;
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Samples per pixel side for anti-aliasing (4×4 = 16 samples).
const SUPERSAMPLE: usize = 4;

/// A square RGB canvas in unit coordinates: (0, 0) top-left, (1, 1) bottom-right.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub size: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(size: usize, background: Rgb) -> Self {
        Canvas {
            size,
            pixels: vec![background; size * size],
        }
    }

    /// Fills every pixel with `colour_at(x, y)` (pixel centres, unit coordinates).
    pub fn paint(&mut self, colour_at: impl Fn(f32, f32) -> Rgb) {
        let n = self.size as f32;
        for py in 0..self.size {
            for px in 0..self.size {
                let (x, y) = ((px as f32 + 0.5) / n, (py as f32 + 0.5) / n);
                self.pixels[py * self.size + px] = colour_at(x, y);
            }
        }
    }

    /// Blends `colour` with `alpha` × coverage wherever `inside(x, y)` holds.
    pub fn fill(&mut self, colour: Rgb, alpha: f32, inside: impl Fn(f32, f32) -> bool) {
        let n = self.size as f32;
        let ss = SUPERSAMPLE as f32;
        for py in 0..self.size {
            for px in 0..self.size {
                let mut hits = 0usize;
                for sy in 0..SUPERSAMPLE {
                    for sx in 0..SUPERSAMPLE {
                        let x = (px as f32 + (sx as f32 + 0.5) / ss) / n;
                        let y = (py as f32 + (sy as f32 + 0.5) / ss) / n;
                        if inside(x, y) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    let cover = alpha * hits as f32 / (ss * ss);
                    let p = &mut self.pixels[py * self.size + px];
                    *p = mix(*p, colour, cover);
                }
            }
        }
    }

    /// RGB bytes, row-major.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .flat_map(|c| c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect()
    }
}

/// Inside an axis-aligned ellipse centred at (cx, cy) with radii (rx, ry).
pub fn in_ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> bool {
    let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
    dx * dx + dy * dy <= 1.0
}

/// Inside a convex or concave polygon (even–odd rule).
pub fn in_polygon(x: f32, y: f32, points: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = points.len().wrapping_sub(1);
    for i in 0..points.len() {
        let (xi, yi) = points[i];
        let (xj, yj) = points[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_covers_inside_and_blends_edges() {
        let mut c = Canvas::new(8, [0.0; 3]);
        c.fill([1.0; 3], 1.0, |x, _| x < 0.5);
        assert_eq!(c.pixels[0], [1.0; 3]);
        assert_eq!(c.pixels[7], [0.0; 3]);
        let mut c = Canvas::new(8, [0.0; 3]);
        c.fill([1.0; 3], 1.0, |x, _| x < 0.5 + 1.0 / 16.0);
        assert!(
            (c.pixels[4][0] - 0.5).abs() < 1e-6,
            "half-covered pixel is grey"
        );
    }

    #[test]
    fn shapes_contain_their_centres() {
        assert!(in_ellipse(0.5, 0.5, 0.5, 0.5, 0.1, 0.2));
        assert!(!in_ellipse(0.7, 0.5, 0.5, 0.5, 0.1, 0.2));
        let tri = [(0.5, 0.1), (0.9, 0.9), (0.1, 0.9)];
        assert!(in_polygon(0.5, 0.6, &tri));
        assert!(!in_polygon(0.1, 0.1, &tri));
    }

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        let g = hsv(1.0 / 3.0, 1.0, 1.0);
        assert!((g[1] - 1.0).abs() < 1e-6 && g[0] < 1e-5);
    }
}
