//! Ten classes of small procedural scenes (sunset, night sky, mountains, tree, house, flower,
//! fish, boat, mushroom, rainbow), each varied in position, size, colour, background and
//! composition by a seeded RNG.

use super::raster::{hsv, in_ellipse, in_polygon, mix, Canvas, Rgb};
use crate::rng::Rng;

/// Class names, by label.
pub const CLASSES: [&str; 10] = [
    "sunset",
    "night sky",
    "mountains",
    "tree",
    "house",
    "flower",
    "fish",
    "boat",
    "mushroom",
    "rainbow",
];

/// Uniform in [lo, hi).
fn uni(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.uniform() as f32
}

/// Vertical gradient background from `top` to `bottom`.
fn gradient(c: &mut Canvas, top: Rgb, bottom: Rgb) {
    c.paint(|_, y| mix(top, bottom, y));
}

fn sky(rng: &mut Rng) -> (Rgb, Rgb) {
    let h = uni(rng, 0.52, 0.62);
    (
        hsv(h, uni(rng, 0.35, 0.7), uni(rng, 0.75, 1.0)),
        hsv(h, 0.15, 1.0),
    )
}

fn in_rotated_ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32, angle: f32) -> bool {
    let (s, co) = angle.sin_cos();
    let (dx, dy) = (x - cx, y - cy);
    let (u, v) = (dx * co + dy * s, -dx * s + dy * co);
    (u / rx).powi(2) + (v / ry).powi(2) <= 1.0
}

fn sunset(c: &mut Canvas, rng: &mut Rng) {
    let warm = uni(rng, 0.0, 0.12);
    let horizon = uni(rng, 0.55, 0.75);
    let top = hsv(uni(rng, 0.7, 0.85), uni(rng, 0.4, 0.7), uni(rng, 0.35, 0.6));
    let low = hsv(warm, uni(rng, 0.6, 0.9), 1.0);
    let sea = hsv(
        uni(rng, 0.55, 0.68),
        uni(rng, 0.5, 0.8),
        uni(rng, 0.25, 0.45),
    );
    c.paint(|_, y| {
        if y < horizon {
            mix(top, low, y / horizon)
        } else {
            sea
        }
    });
    let (sx, r) = (uni(rng, 0.25, 0.75), uni(rng, 0.1, 0.2));
    let sy = horizon - uni(rng, -0.02, 0.2);
    let sun = hsv(warm + 0.08, uni(rng, 0.3, 0.7), 1.0);
    c.fill(sun, 1.0, |x, y| {
        y < horizon && in_ellipse(x, y, sx, sy, r, r)
    });
    for k in 0..4 {
        let y0 = horizon + 0.04 + 0.06 * k as f32;
        let w = r * (1.0 - 0.2 * k as f32);
        c.fill(sun, 0.6, |x, y| {
            (y - y0).abs() < 0.012 && (x - sx).abs() < w
        });
    }
}

fn night(c: &mut Canvas, rng: &mut Rng) {
    let top = hsv(uni(rng, 0.6, 0.72), uni(rng, 0.6, 0.9), uni(rng, 0.08, 0.2));
    let bottom = hsv(uni(rng, 0.6, 0.72), uni(rng, 0.5, 0.8), uni(rng, 0.25, 0.4));
    gradient(c, top, bottom);
    for _ in 0..(6 + rng.below(10)) {
        let (x0, y0) = (uni(rng, 0.03, 0.97), uni(rng, 0.03, 0.8));
        let r = uni(rng, 0.012, 0.03);
        c.fill([1.0, 1.0, uni(rng, 0.7, 1.0)], 1.0, |x, y| {
            in_ellipse(x, y, x0, y0, r, r)
        });
    }
    let (mx, my, r) = (
        uni(rng, 0.25, 0.75),
        uni(rng, 0.2, 0.5),
        uni(rng, 0.12, 0.2),
    );
    let off = uni(rng, 0.3, 0.6) * r * if rng.below(2) == 0 { 1.0 } else { -1.0 };
    let moon = hsv(uni(rng, 0.1, 0.17), uni(rng, 0.1, 0.4), 1.0);
    c.fill(moon, 1.0, |x, y| {
        in_ellipse(x, y, mx, my, r, r) && !in_ellipse(x, y, mx + off, my - 0.3 * r, r, r)
    });
}

fn mountains(c: &mut Canvas, rng: &mut Rng) {
    let (top, bottom) = sky(rng);
    gradient(c, top, bottom);
    let ground = uni(rng, 0.75, 0.88);
    for _ in 0..(1 + rng.below(3)) {
        let (px, peak) = (uni(rng, 0.15, 0.85), uni(rng, 0.15, 0.4));
        let half = uni(rng, 0.25, 0.45);
        let rock = hsv(
            uni(rng, 0.55, 0.75),
            uni(rng, 0.1, 0.35),
            uni(rng, 0.3, 0.6),
        );
        let tri = [
            (px, peak),
            (px + half, ground + 0.05),
            (px - half, ground + 0.05),
        ];
        c.fill(rock, 1.0, |x, y| in_polygon(x, y, &tri));
        let cap = peak + (ground - peak) * uni(rng, 0.2, 0.35);
        c.fill([0.97, 0.97, 1.0], 1.0, |x, y| {
            y < cap && in_polygon(x, y, &tri)
        });
    }
    let grass = hsv(
        uni(rng, 0.22, 0.36),
        uni(rng, 0.5, 0.8),
        uni(rng, 0.35, 0.6),
    );
    c.fill(grass, 1.0, |_, y| y > ground);
}

fn tree(c: &mut Canvas, rng: &mut Rng) {
    let (top, bottom) = sky(rng);
    gradient(c, top, bottom);
    let ground = uni(rng, 0.72, 0.85);
    let grass = hsv(uni(rng, 0.2, 0.35), uni(rng, 0.5, 0.8), uni(rng, 0.4, 0.65));
    c.fill(grass, 1.0, |_, y| y > ground);
    let (tx, tw) = (uni(rng, 0.3, 0.7), uni(rng, 0.04, 0.08));
    let crown_y = uni(rng, 0.3, 0.45);
    let bark = hsv(uni(rng, 0.05, 0.1), uni(rng, 0.5, 0.8), uni(rng, 0.25, 0.4));
    c.fill(bark, 1.0, |x, y| {
        (x - tx).abs() < tw && y > crown_y && y < ground + 0.03
    });
    let leaves = hsv(uni(rng, 0.22, 0.4), uni(rng, 0.5, 0.9), uni(rng, 0.3, 0.6));
    let r = uni(rng, 0.17, 0.27);
    for _ in 0..(1 + rng.below(3)) {
        let (cx, cy) = (tx + uni(rng, -0.1, 0.1), crown_y + uni(rng, -0.06, 0.06));
        c.fill(leaves, 1.0, |x, y| in_ellipse(x, y, cx, cy, r, r * 0.9));
    }
}

fn house(c: &mut Canvas, rng: &mut Rng) {
    let (top, bottom) = sky(rng);
    gradient(c, top, bottom);
    let ground = uni(rng, 0.78, 0.9);
    let grass = hsv(uni(rng, 0.2, 0.35), uni(rng, 0.4, 0.7), uni(rng, 0.4, 0.6));
    c.fill(grass, 1.0, |_, y| y > ground);
    let (hx, hw) = (uni(rng, 0.35, 0.65), uni(rng, 0.18, 0.3));
    let wall_top = ground - uni(rng, 0.25, 0.38);
    let wall = hsv(uni(rng, 0.0, 1.0), uni(rng, 0.2, 0.6), uni(rng, 0.7, 0.95));
    c.fill(wall, 1.0, |x, y| {
        (x - hx).abs() < hw && y > wall_top && y <= ground
    });
    let roof = hsv(uni(rng, 0.95, 1.08), uni(rng, 0.6, 0.9), uni(rng, 0.4, 0.7));
    let tri = [
        (hx, wall_top - uni(rng, 0.15, 0.25)),
        (hx + hw + 0.05, wall_top + 0.01),
        (hx - hw - 0.05, wall_top + 0.01),
    ];
    c.fill(roof, 1.0, |x, y| in_polygon(x, y, &tri));
    let door_x = hx + uni(rng, -0.5, 0.5) * hw;
    let door = hsv(uni(rng, 0.05, 0.1), 0.6, 0.3);
    c.fill(door, 1.0, |x, y| {
        (x - door_x).abs() < 0.05 && y > ground - 0.15 && y <= ground
    });
}

fn flower(c: &mut Canvas, rng: &mut Rng) {
    let bg = hsv(uni(rng, 0.2, 0.4), uni(rng, 0.3, 0.6), uni(rng, 0.3, 0.6));
    c.paint(|_, _| bg);
    let (fx, fy) = (uni(rng, 0.35, 0.65), uni(rng, 0.3, 0.55));
    let stem = hsv(0.3, 0.7, 0.35);
    c.fill(stem, 1.0, |x, y| (x - fx).abs() < 0.025 && y > fy);
    let petals = 5 + rng.below(4) as usize;
    let (len, wid) = (uni(rng, 0.14, 0.22), uni(rng, 0.06, 0.09));
    let colour = hsv(uni(rng, 0.75, 1.05), uni(rng, 0.5, 0.9), uni(rng, 0.8, 1.0));
    let turn = uni(rng, 0.0, 1.0);
    for k in 0..petals {
        let a = std::f32::consts::TAU * (k as f32 + turn) / petals as f32;
        let (px, py) = (fx + a.cos() * len * 0.8, fy + a.sin() * len * 0.8);
        c.fill(colour, 1.0, |x, y| {
            in_rotated_ellipse(x, y, px, py, len * 0.6, wid, a)
        });
    }
    let r = uni(rng, 0.05, 0.08);
    c.fill(hsv(uni(rng, 0.1, 0.16), 0.9, 1.0), 1.0, |x, y| {
        in_ellipse(x, y, fx, fy, r, r)
    });
}

fn fish(c: &mut Canvas, rng: &mut Rng) {
    let top = hsv(
        uni(rng, 0.48, 0.58),
        uni(rng, 0.5, 0.8),
        uni(rng, 0.55, 0.8),
    );
    let bottom = hsv(
        uni(rng, 0.55, 0.65),
        uni(rng, 0.6, 0.9),
        uni(rng, 0.25, 0.4),
    );
    gradient(c, top, bottom);
    let (fx, fy) = (uni(rng, 0.35, 0.65), uni(rng, 0.35, 0.65));
    let (rx, ry) = (uni(rng, 0.2, 0.28), uni(rng, 0.1, 0.16));
    let dir = if rng.below(2) == 0 { 1.0 } else { -1.0 };
    let body = hsv(uni(rng, 0.0, 0.15), uni(rng, 0.6, 1.0), uni(rng, 0.8, 1.0));
    let tail_x = fx - dir * rx * 0.8;
    let tail = [
        (tail_x, fy),
        (tail_x - dir * rx * 0.7, fy - ry * 1.1),
        (tail_x - dir * rx * 0.7, fy + ry * 1.1),
    ];
    c.fill(body, 1.0, |x, y| in_polygon(x, y, &tail));
    c.fill(body, 1.0, |x, y| in_ellipse(x, y, fx, fy, rx, ry));
    let (ex, ey) = (fx + dir * rx * 0.55, fy - ry * 0.25);
    c.fill([0.05; 3], 1.0, |x, y| in_ellipse(x, y, ex, ey, 0.03, 0.03));
    for _ in 0..rng.below(4) {
        let (bx, by, r) = (
            uni(rng, 0.1, 0.9),
            uni(rng, 0.05, 0.4),
            uni(rng, 0.015, 0.03),
        );
        c.fill([0.9, 0.95, 1.0], 0.7, |x, y| in_ellipse(x, y, bx, by, r, r));
    }
}

fn boat(c: &mut Canvas, rng: &mut Rng) {
    let (top, bottom) = sky(rng);
    let horizon = uni(rng, 0.55, 0.7);
    let sea = hsv(
        uni(rng, 0.52, 0.62),
        uni(rng, 0.6, 0.9),
        uni(rng, 0.4, 0.65),
    );
    c.paint(|_, y| {
        if y < horizon {
            mix(top, bottom, y / horizon)
        } else {
            sea
        }
    });
    let (bx, bw) = (uni(rng, 0.3, 0.7), uni(rng, 0.16, 0.25));
    let deck = horizon + uni(rng, 0.0, 0.06);
    let hull = hsv(uni(rng, 0.0, 1.0), uni(rng, 0.4, 0.8), uni(rng, 0.2, 0.45));
    let trap = [
        (bx - bw, deck),
        (bx + bw, deck),
        (bx + bw * 0.7, deck + 0.1),
        (bx - bw * 0.7, deck + 0.1),
    ];
    c.fill(hull, 1.0, |x, y| in_polygon(x, y, &trap));
    let mast_top = deck - uni(rng, 0.35, 0.48);
    c.fill([0.3, 0.2, 0.1], 1.0, |x, y| {
        (x - bx).abs() < 0.015 && y > mast_top && y < deck
    });
    let sail = hsv(uni(rng, 0.0, 1.0), uni(rng, 0.0, 0.5), uni(rng, 0.85, 1.0));
    let side = if rng.below(2) == 0 { 1.0 } else { -1.0 };
    let tri = [
        (bx + side * 0.02, mast_top),
        (bx + side * 0.02, deck - 0.03),
        (bx + side * bw, deck - 0.03),
    ];
    c.fill(sail, 1.0, |x, y| in_polygon(x, y, &tri));
}

fn mushroom(c: &mut Canvas, rng: &mut Rng) {
    let top = hsv(
        uni(rng, 0.25, 0.4),
        uni(rng, 0.3, 0.6),
        uni(rng, 0.25, 0.45),
    );
    let bottom = hsv(
        uni(rng, 0.08, 0.12),
        uni(rng, 0.4, 0.7),
        uni(rng, 0.2, 0.35),
    );
    gradient(c, top, bottom);
    let (mx, base) = (uni(rng, 0.35, 0.65), uni(rng, 0.8, 0.9));
    let cap_y = base - uni(rng, 0.3, 0.4);
    let stem_w = uni(rng, 0.06, 0.1);
    c.fill([0.95, 0.92, 0.85], 1.0, |x, y| {
        (x - mx).abs() < stem_w && y > cap_y && y < base
    });
    let (rx, ry) = (uni(rng, 0.22, 0.32), uni(rng, 0.14, 0.22));
    let red = rng.below(3) != 0;
    let cap = if red {
        hsv(
            uni(rng, 0.97, 1.03),
            uni(rng, 0.75, 1.0),
            uni(rng, 0.75, 0.95),
        )
    } else {
        hsv(
            uni(rng, 0.06, 0.1),
            uni(rng, 0.5, 0.8),
            uni(rng, 0.45, 0.65),
        )
    };
    c.fill(cap, 1.0, |x, y| {
        y <= cap_y + 0.01 && in_ellipse(x, y, mx, cap_y, rx, ry)
    });
    for _ in 0..(2 + rng.below(4)) {
        let (dx, dy) = (
            mx + uni(rng, -0.6, 0.6) * rx,
            cap_y - uni(rng, 0.2, 0.7) * ry,
        );
        let r = uni(rng, 0.02, 0.04);
        c.fill([1.0, 1.0, 0.95], 1.0, |x, y| {
            in_ellipse(x, y, dx, dy, r, r) && in_ellipse(x, y, mx, cap_y, rx, ry)
        });
    }
}

fn rainbow(c: &mut Canvas, rng: &mut Rng) {
    let (top, bottom) = sky(rng);
    gradient(c, top, bottom);
    let (cx, cy) = (uni(rng, 0.35, 0.65), uni(rng, 0.75, 0.95));
    let outer = uni(rng, 0.4, 0.55);
    let band = uni(rng, 0.03, 0.045);
    for k in 0..6 {
        let r_out = outer - band * k as f32;
        let r_in = r_out - band;
        let colour = hsv(k as f32 / 7.0, 0.85, 1.0);
        c.fill(colour, 0.9, |x, y| {
            let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
            y < cy && d <= r_out && d > r_in
        });
    }
    for _ in 0..rng.below(3) {
        let (ux, uy) = (uni(rng, 0.1, 0.9), uni(rng, 0.1, 0.4));
        c.fill([1.0; 3], 0.95, |x, y| {
            in_ellipse(x, y, ux, uy, 0.1, 0.05)
                || in_ellipse(x, y, ux + 0.06, uy - 0.03, 0.07, 0.05)
        });
    }
}

/// Draws one scene of class `label` (0..10) at `size`×`size`; the same (label, seed) always
/// gives the same picture. Returns RGB bytes, row-major.
pub fn draw(label: usize, seed: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ ((label as u64 + 1) << 56));
    let mut c = Canvas::new(size, [0.0; 3]);
    let painters: [fn(&mut Canvas, &mut Rng); 10] = [
        sunset, night, mountains, tree, house, flower, fish, boat, mushroom, rainbow,
    ];
    painters[label % painters.len()](&mut c, &mut rng);
    c.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        for label in 0..CLASSES.len() {
            assert_eq!(draw(label, 3, 32), draw(label, 3, 32));
            assert_ne!(
                draw(label, 3, 32),
                draw(label, 4, 32),
                "class {label} varies"
            );
            assert_eq!(draw(label, 3, 32).len(), 32 * 32 * 3);
        }
    }

    #[test]
    fn classes_differ_in_mean_colour_or_layout() {
        // Average each class over many seeds; no two class means may be near-identical.
        let means: Vec<Vec<f32>> = (0..CLASSES.len())
            .map(|label| {
                let mut acc = vec![0f32; 32 * 32 * 3];
                for seed in 0..40 {
                    for (a, b) in acc.iter_mut().zip(draw(label, seed, 32)) {
                        *a += b as f32 / 40.0;
                    }
                }
                acc
            })
            .collect();
        for i in 0..means.len() {
            for j in (i + 1)..means.len() {
                let d: f32 = means[i]
                    .iter()
                    .zip(&means[j])
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f32>()
                    / means[i].len() as f32;
                assert!(d > 8.0, "classes {i} and {j} look alike on average ({d})");
            }
        }
    }
}
