//! What the comparison view shows, whatever it came from (a live Compare node or run-history
//! entries): columns of images with their numbers, and the pure parts of the view: merging two
//! entries, difference maps, the metric axis and the Pareto front of the scatter.

use cachedit_nodes::cache::NO_CACHE;
use cachedit_nodes::compare::{table, Comparison};
use cachedit_nodes::image::RgbImage;
use cachedit_nodes::sampling::measure::Spread;
use cachedit_nodes::sampling::stats::SamplerStats;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The numbers of one column (the reference or a config), as the table gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// The uncached reference the other columns of its source are judged against.
    pub reference: bool,
    pub runs: usize,
    pub wall_ms: Option<Spread>,
    pub cpu_ms: Option<Spread>,
    /// Reference median ÷ this median, with the range of the extremes.
    pub speedup: Option<Spread>,
    pub ideal_speedup: f64,
    /// `ok`, `at_ideal` or `noisy` (see the table).
    pub verdict: Option<String>,
    pub hit_rate: f64,
    pub psnr_db: Option<Spread>,
    pub ssim: Option<Spread>,
    pub class_kept: Option<f64>,
    pub feature_distance: Option<Spread>,
}

/// One column of the view: a config (or the reference) and its image per sample.
#[derive(Debug, Clone)]
pub struct ViewColumn {
    /// `ref`, `1`, `2` … as in the table; `A 1`, `B ref` … once two entries are merged.
    pub label: String,
    pub signature: String,
    /// The comparison it came from (its title).
    pub source: String,
    pub stats: ColumnStats,
    /// One image per sample, in the order of [`ViewData::samples`]; fewer while it runs.
    pub images: Vec<Arc<RgbImage>>,
}

/// Everything the view shows.
#[derive(Debug, Clone)]
pub struct ViewData {
    pub title: String,
    /// The (seed, class) of each row.
    pub samples: Vec<(u64, u32)>,
    pub columns: Vec<ViewColumn>,
    /// Said above the grid (e.g. two merged entries sampled different seeds).
    pub note: Option<String>,
}

impl ViewData {
    /// The view of a comparison: the reference first, then each cell, numbered as the table.
    pub fn from_comparison(title: &str, c: &Comparison) -> Self {
        let rows = table::rows(c);
        let results = std::iter::once(&c.reference).chain(&c.cells);
        let columns = rows
            .into_iter()
            .zip(results)
            .map(|(row, result)| ViewColumn {
                label: if row.cell == "reference" {
                    "ref".into()
                } else {
                    row.cell.clone()
                },
                signature: row.signature.clone(),
                source: title.to_string(),
                stats: ColumnStats {
                    reference: row.cell == "reference",
                    runs: row.runs,
                    wall_ms: row.wall_ms,
                    cpu_ms: row.cpu_ms,
                    speedup: row.speedup,
                    ideal_speedup: row.ideal_speedup,
                    verdict: row.verdict.map(str::to_string),
                    hit_rate: row.hit_rate,
                    psnr_db: row.psnr_db,
                    ssim: row.ssim,
                    class_kept: row.class_kept,
                    feature_distance: row.feature_distance,
                },
                images: result
                    .samples
                    .iter()
                    .map(|s| Arc::new(s.image.clone()))
                    .collect(),
            })
            .collect();
        ViewData {
            title: title.to_string(),
            samples: c
                .reference
                .samples
                .iter()
                .map(|s| (s.seed, s.class))
                .collect(),
            columns,
            note: None,
        }
    }

    /// The view of one cached Sampler run: a single column, numbered against the uncached
    /// baseline it timed (when it timed one); `None` for a run without a cache.
    pub fn from_sampler(
        title: &str,
        stats: &SamplerStats,
        image: Option<Arc<RgbImage>>,
    ) -> Option<Self> {
        let summary = stats.summary.as_ref()?;
        if summary.signature == NO_CACHE {
            return None;
        }
        let m = stats.measured.as_ref();
        let column = ViewColumn {
            label: "1".into(),
            signature: summary.signature.clone(),
            source: title.to_string(),
            stats: ColumnStats {
                reference: false,
                runs: m.map_or(1, |m| m.cached.rounds_ms.len()),
                wall_ms: Some(m.map_or(
                    Spread {
                        median: stats.denoise_ms,
                        min: stats.denoise_ms,
                        max: stats.denoise_ms,
                    },
                    |m| m.cached.wall_ms,
                )),
                cpu_ms: m.and_then(|m| m.cached.cpu_ms),
                speedup: m.map(|m| Spread {
                    median: m.speedup,
                    min: m.speedup_min,
                    max: m.speedup_max,
                }),
                ideal_speedup: summary.ideal_speedup,
                verdict: m.map(|m| m.verdict.name().to_string()),
                hit_rate: summary.hit_rate,
                psnr_db: m.map(|m| Spread {
                    median: m.psnr_db,
                    min: m.psnr_db,
                    max: m.psnr_db,
                }),
                ssim: m.map(|m| Spread {
                    median: m.ssim,
                    min: m.ssim,
                    max: m.ssim,
                }),
                class_kept: None,
                feature_distance: None,
            },
            images: image.into_iter().collect(),
        };
        Some(ViewData {
            title: title.to_string(),
            samples: vec![(stats.seed, stats.class_labels.first().copied().unwrap_or(0))],
            columns: vec![column],
            note: None,
        })
    }

    /// Two views in one: `a`'s columns then `b`'s, labelled `A …` and `B …`. Each keeps the
    /// numbers it was measured with (against its own reference); rows follow `a`'s samples.
    pub fn merge(a: ViewData, b: ViewData) -> ViewData {
        let note = (a.samples != b.samples).then(|| {
            format!(
                "the entries sampled different (seed, class): A {}, B {}; rows pair them by position",
                samples_text(&a.samples),
                samples_text(&b.samples)
            )
        });
        let tag = |prefix: &str, v: ViewData| {
            v.columns.into_iter().map({
                let prefix = prefix.to_string();
                move |mut c| {
                    c.label = format!("{prefix} {}", c.label);
                    c
                }
            })
        };
        let title = format!("A: {}  ·  B: {}", a.title, b.title);
        let samples = if a.samples.len() >= b.samples.len() {
            a.samples.clone()
        } else {
            b.samples.clone()
        };
        let columns = tag("A", a).chain(tag("B", b)).collect();
        ViewData {
            title,
            samples,
            columns,
            note,
        }
    }

    /// The reference a column is judged against: the first reference at or before it (its
    /// source's), or the first column.
    pub fn reference_of(&self, column: usize) -> usize {
        (0..=column.min(self.columns.len().saturating_sub(1)))
            .rev()
            .find(|&i| self.columns[i].stats.reference)
            .unwrap_or(0)
    }
}

fn samples_text(samples: &[(u64, u32)]) -> String {
    let items: Vec<String> = samples
        .iter()
        .take(6)
        .map(|(s, c)| format!("{s}/{c}"))
        .collect();
    let more = if samples.len() > 6 { " …" } else { "" };
    format!("{}{more}", items.join(", "))
}

/// The quality axis of the scatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Psnr,
    Ssim,
    FeatureDistance,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Psnr, Metric::Ssim, Metric::FeatureDistance];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Psnr => "PSNR (dB)",
            Metric::Ssim => "SSIM",
            Metric::FeatureDistance => "feature distance",
        }
    }

    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::FeatureDistance)
    }

    /// The column's median, where it has one (a reference has none: it is the target).
    pub fn value(self, s: &ColumnStats) -> Option<f64> {
        match self {
            Metric::Psnr => s.psnr_db.map(|p| p.median),
            Metric::Ssim => s.ssim.map(|p| p.median),
            Metric::FeatureDistance => s.feature_distance.map(|p| p.median),
        }
    }
}

/// One point of the scatter: a column, its measured speedup and its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub column: usize,
    pub speedup: f64,
    pub quality: f64,
}

/// The scatter's points: every non-reference column with a measured speedup and the metric.
pub fn points(data: &ViewData, metric: Metric) -> Vec<Point> {
    data.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.stats.reference)
        .filter_map(|(column, c)| {
            Some(Point {
                column,
                speedup: c.stats.speedup?.median,
                quality: metric.value(&c.stats)?,
            })
        })
        .collect()
}

/// The points no other point beats on both axes (faster or as fast, and better or as good,
/// strictly better on one), sorted by speedup: the configs worth choosing from.
pub fn pareto_front(points: &[Point], higher_is_better: bool) -> Vec<Point> {
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let at_least = |a: f64, b: f64| a == b || better(a, b);
    let mut front: Vec<Point> = points
        .iter()
        .filter(|p| {
            !points.iter().any(|q| {
                q.speedup >= p.speedup
                    && at_least(q.quality, p.quality)
                    && (q.speedup > p.speedup || better(q.quality, p.quality))
            })
        })
        .copied()
        .collect();
    front.sort_by(|a, b| a.speedup.total_cmp(&b.speedup));
    front
}

/// Where an infinite PSNR (identical images) is drawn: above the best finite value.
pub fn plot_quality(quality: f64, finite_max: f64) -> f64 {
    if quality.is_finite() {
        quality
    } else {
        finite_max + 3.0
    }
}

/// |a − b| per channel, times `gain`, clamped: black where the images agree.
pub fn difference_map(a: &RgbImage, b: &RgbImage, gain: f32) -> Result<RgbImage, String> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(format!(
            "the images differ in size ({}×{} and {}×{})",
            a.width, a.height, b.width, b.height
        ));
    }
    let pixels = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| (f32::from(x.abs_diff(y)) * gain).min(255.0) as u8)
        .collect();
    RgbImage::new(a.width, a.height, pixels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(column: usize, speedup: f64, quality: f64) -> Point {
        Point {
            column,
            speedup,
            quality,
        }
    }

    #[test]
    fn the_front_keeps_only_configs_nothing_beats_on_both_axes() {
        let pts = [
            p(1, 1.2, 40.0),
            p(2, 1.5, 35.0),
            p(3, 1.4, 30.0), // slower and worse than 2
            p(4, 2.0, 25.0),
            p(5, 1.2, f64::INFINITY), // beats 1
        ];
        let front: Vec<usize> = pareto_front(&pts, true).iter().map(|p| p.column).collect();
        assert_eq!(front, vec![5, 2, 4]);
        // Lower is better for a distance.
        let distances = [
            p(1, 1.2, 0.1),
            p(2, 1.5, 0.3),
            p(3, 1.4, 0.4), // slower and further than 2
            p(4, 2.0, 0.5),
            p(5, 1.1, 0.2), // slower and further than 1
        ];
        let front: Vec<usize> = pareto_front(&distances, false)
            .iter()
            .map(|p| p.column)
            .collect();
        assert_eq!(front, vec![1, 2, 4]);
        // Read the wrong way round, the fastest and furthest point beats every other.
        let front: Vec<usize> = pareto_front(&distances, true)
            .iter()
            .map(|p| p.column)
            .collect();
        assert_eq!(front, vec![4]);
    }

    #[test]
    fn equal_points_are_both_on_the_front() {
        let pts = [p(1, 1.5, 30.0), p(2, 1.5, 30.0)];
        assert_eq!(pareto_front(&pts, true).len(), 2);
    }

    #[test]
    fn the_difference_map_is_black_where_images_agree_and_scaled_elsewhere() {
        let a = RgbImage::new(2, 1, vec![10, 10, 10, 100, 50, 0]).unwrap();
        let b = RgbImage::new(2, 1, vec![10, 10, 10, 90, 60, 255]).unwrap();
        let d = difference_map(&a, &b, 4.0).unwrap();
        assert_eq!(d.pixels, vec![0, 0, 0, 40, 40, 255]);
        let small = RgbImage::new(1, 1, vec![0; 3]).unwrap();
        assert!(difference_map(&a, &small, 1.0)
            .unwrap_err()
            .contains("2×1 and 1×1"));
    }
}
