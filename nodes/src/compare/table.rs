//! A comparison as a table: one row per cell (the reference first) with its time, measured and
//! ideal speedup, hit rate and quality, as text for the terminal, CSV and JSON.

use super::Comparison;
use crate::sampling::measure::{Spread, Verdict};
use serde::Serialize;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `reference` for the uncached reference, else the cell's number from 1.
    pub cell: String,
    pub signature: String,
    pub runs: usize,
    pub wall_ms: Option<Spread>,
    /// The sum of this row's denoise loops: what its runs cost, for the overhead of comparing.
    pub total_ms: f64,
    pub cpu_ms: Option<Spread>,
    /// Reference median ÷ this median, with the range of the extremes.
    pub speedup: Option<Spread>,
    pub ideal_speedup: f64,
    /// Measured ÷ ideal.
    pub efficiency: Option<f64>,
    /// How far the measured speedup may be read (as the Sampler's baseline says it): `ok`,
    /// `at_ideal` or `noisy` (beyond the ideal by more than the spread: not a result).
    pub verdict: Option<&'static str>,
    pub hit_rate: f64,
    /// Over the samples, against the reference of each; `None` on the reference row.
    /// Identical images are `inf`.
    pub psnr_db: Option<Spread>,
    pub ssim: Option<Spread>,
    /// The share of samples the scene classifier puts in the reference's class (models it
    /// was trained for only).
    pub class_kept: Option<f64>,
    /// 1 − cos of the scene classifier's features against the reference, over the samples
    /// (the perceptual distance this app can compute without downloading LPIPS weights).
    pub feature_distance: Option<Spread>,
    pub repeatable: bool,
}

/// The rows: the reference, then each cell in order.
pub fn rows(c: &Comparison) -> Vec<Row> {
    let reference = &c.reference;
    let mut out = vec![Row {
        cell: "reference".into(),
        signature: reference.signature.clone(),
        runs: reference.runs.len(),
        wall_ms: reference.wall_ms(),
        total_ms: reference.runs.iter().map(|r| r.wall_ms).sum(),
        cpu_ms: reference.cpu_ms(),
        speedup: None,
        ideal_speedup: 1.0,
        efficiency: None,
        verdict: None,
        hit_rate: 0.0,
        psnr_db: None,
        ssim: None,
        class_kept: None,
        feature_distance: None,
        repeatable: reference.repeatable,
    }];
    for (i, cell) in c.cells.iter().enumerate() {
        let speedup = c
            .speedup(i)
            .map(|(median, min, max)| Spread { median, min, max });
        let ideal = cell.ideal_speedup();
        out.push(Row {
            cell: (i + 1).to_string(),
            signature: cell.signature.clone(),
            runs: cell.runs.len(),
            wall_ms: cell.wall_ms(),
            total_ms: cell.runs.iter().map(|r| r.wall_ms).sum(),
            cpu_ms: cell.cpu_ms(),
            efficiency: speedup.map(|s| s.median / ideal.max(f64::MIN_POSITIVE)),
            verdict: speedup.map(|s| Verdict::of(s.median, s.min, ideal).name()),
            speedup,
            ideal_speedup: ideal,
            hit_rate: cell.hit_rate(),
            psnr_db: cell.psnr_db(),
            ssim: cell.ssim(),
            class_kept: cell.class_kept,
            feature_distance: cell.feature_distance(),
            repeatable: cell.repeatable,
        });
    }
    out
}

fn spread_text(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) if s.min == s.max => format!("{:.*}", digits, s.median),
        Some(s) => format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        ),
        None => "–".into(),
    }
}

/// The table for a terminal: aligned columns, one row per cell.
pub fn text(rows: &[Row]) -> String {
    let header = [
        "cell",
        "signature",
        "wall ms",
        "speedup",
        "ideal",
        "hit rate",
        "PSNR dB",
        "SSIM",
        "class kept",
        "feat dist",
        "verdict",
    ];
    let body: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.cell.clone(),
                r.signature.clone(),
                spread_text(r.wall_ms, 0),
                r.speedup.map_or("–".into(), |s| {
                    if s.min == s.max {
                        format!("{:.2}×", s.median)
                    } else {
                        format!("{:.2}× ({:.2}–{:.2}×)", s.median, s.min, s.max)
                    }
                }),
                format!("{:.2}×", r.ideal_speedup),
                format!("{:.0}%", r.hit_rate * 100.0),
                spread_text(r.psnr_db, 1),
                spread_text(r.ssim, 3),
                r.class_kept
                    .map_or("–".into(), |k| format!("{:.0}%", k * 100.0)),
                r.feature_distance
                    .map_or("–".into(), |d| format!("{:.1e}", d.median)),
                r.verdict.unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&header.map(String::from));
    for row in &body {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// CSV with a header row; spreads as median, min, max columns; empty where not applicable.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "cell,signature,runs,wall_ms,wall_ms_min,wall_ms_max,total_ms,cpu_ms,speedup,speedup_min,speedup_max,ideal_speedup,efficiency,hit_rate,psnr_db,psnr_db_min,psnr_db_max,ssim,ssim_min,ssim_max,class_kept,feature_distance,feature_distance_min,feature_distance_max,verdict,repeatable\n",
    );
    let three = |s: Option<Spread>| match s {
        Some(s) => format!("{},{},{}", s.median, s.min, s.max),
        None => ",,".into(),
    };
    for r in rows {
        let fields = [
            r.cell.clone(),
            csv_field(&r.signature),
            r.runs.to_string(),
            three(r.wall_ms),
            r.total_ms.to_string(),
            r.cpu_ms.map_or(String::new(), |s| s.median.to_string()),
            three(r.speedup),
            r.ideal_speedup.to_string(),
            r.efficiency.map_or(String::new(), |e| e.to_string()),
            r.hit_rate.to_string(),
            three(r.psnr_db),
            three(r.ssim),
            r.class_kept.map_or(String::new(), |k| k.to_string()),
            three(r.feature_distance),
            r.verdict.unwrap_or("").to_string(),
            r.repeatable.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// A CSV field, quoted when it holds a comma, quote or newline.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
