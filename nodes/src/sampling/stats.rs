//! Per-run sampler statistics: what the Sampler node reports (every transformer call and the
//! step-cache summary), what Detailed Stats prints and the CLI writes to stats.json.

use super::denoise::StepRecord;
pub use super::measure::Measured;
use crate::cache::{CacheSummary, CallRecord};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SamplerStats {
    pub model: String,
    pub scheduler: String,
    pub seed: u64,
    /// The starting-latent file the noise came from instead of the seed, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent_file: Option<String>,
    pub class_labels: Vec<u32>,
    /// The prompt, for text-conditioned models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The negative prompt, when true CFG ran with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub guidance: f64,
    /// `batched` or `separate` (two calls per step).
    pub cfg_mode: String,
    /// Transformer calls made (a CFG batch counts once; separate CFG makes two per step).
    pub transformer_calls: usize,
    /// Block evaluations run.
    pub block_evaluations: usize,
    /// Wall time of the whole node run (noise, sampling, image), in ms.
    pub total_ms: f64,
    /// Wall time of the denoise loop (the sum of the steps), in ms.
    pub denoise_ms: f64,
    pub steps: Vec<StepStat>,
    /// Every transformer call with the step cache's decision.
    pub calls: Vec<CallRecord>,
    /// The step-cache summary (signature `NoCache` without a cache).
    pub summary: Option<CacheSummary>,
    /// The uncached run of the same settings, when the Sampler was asked to time one.
    pub measured: Option<Measured>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStat {
    pub index: usize,
    pub timestep: f64,
    pub ms: f64,
}

impl From<&StepRecord> for StepStat {
    fn from(r: &StepRecord) -> Self {
        StepStat {
            index: r.index,
            timestep: r.timestep,
            ms: r.ms,
        }
    }
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

impl SamplerStats {
    /// The human-readable summary (Detailed Stats; the CLI prints it), in cache-dit's table
    /// style: cached steps and diff percentiles per branch, then blocks, speed and memory.
    pub fn summary_text(&self) -> String {
        let mut out = String::new();
        let signature = self
            .summary
            .as_ref()
            .map_or(crate::cache::NO_CACHE, |s| s.signature.as_str());
        let _ = writeln!(
            out,
            "{signature} | {} | {} steps | {} | {}",
            self.model,
            self.steps.len(),
            match &self.prompt {
                Some(p) => format!("prompt {p:?}, guidance {}", self.guidance),
                None => format!("cfg {}", self.cfg_mode),
            },
            match &self.latent_file {
                Some(file) => format!("latent {file}"),
                None => format!("seed {}", self.seed),
            }
        );
        let Some(s) = &self.summary else {
            return out;
        };
        let _ = writeln!(
            out,
            "| branch | calls | cached | hit rate | diff min | P25 | P50 | P75 | P95 | max |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for b in &s.branches {
            let diffs = match &b.diffs {
                Some(d) => format!(
                    "{:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3}",
                    d.min, d.p25, d.p50, d.p75, d.p95, d.max
                ),
                None => "– | – | – | – | – | –".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0}% | {diffs} |",
                b.branch.name(),
                b.calls,
                b.cached_steps.len(),
                b.hit_rate * 100.0
            );
        }
        let _ = writeln!(
            out,
            "blocks run {} of {} (ideal speedup {:.2}x); cache held {}; denoise {:.1} ms",
            s.block_evaluations,
            s.block_evaluations_uncached,
            s.ideal_speedup,
            kib(s.cache_bytes),
            self.denoise_ms
        );
        match &self.measured {
            Some(m) => {
                let _ = writeln!(out, "measured vs uncached: {}", m.headline("x"));
                let _ = writeln!(out, "  {}", m.times_text());
                if !m.repeatable {
                    let _ = writeln!(
                        out,
                        "  the rounds did not all give the same image: the timings may not \
                         compare like with like"
                    );
                }
                let _ = writeln!(
                    out,
                    "  PSNR {:.2} dB, SSIM {:.4} against the uncached image",
                    m.psnr_db, m.ssim
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "measured speedup: not timed (set the Sampler's `baseline` to time an \
                     uncached run)"
                );
            }
        }
        out
    }
}
