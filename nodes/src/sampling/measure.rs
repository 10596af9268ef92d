//! Measuring a speedup honestly: process CPU time and the load average, the median and spread
//! of interleaved rounds, and the verdict that keeps a noisy measurement from passing as a
//! result (a cached run cannot beat the ideal that its block evaluations set).

use serde::{Deserialize, Serialize};

/// User + system CPU time of this process, all threads, in ms (`CLOCK_PROCESS_CPUTIME_ID`,
/// nanosecond resolution). On a shared CPU it follows the work done where wall time follows
/// the load; `None` where the OS does not report it.
pub fn process_cpu_ms() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
}

/// The 1-minute load average (Linux `/proc/loadavg`): how busy the machine was.
pub fn load_average_1m() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The median and the range of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// numpy's median: the middle value, or the mean of the two middle ones.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values (NaNs sort last, as `f64::total_cmp` orders them).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if !n.is_multiple_of(2) => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One timed denoise loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunTime {
    /// Wall time of the loop (the sum of its steps), in ms.
    pub wall_ms: f64,
    /// Process CPU time over the loop, in ms, when the OS reports it.
    pub cpu_ms: Option<f64>,
}

/// The rounds of one kind of run (uncached or cached).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// Wall time of each round's denoise loop, in ms, in round order.
    pub rounds_ms: Vec<f64>,
    pub wall_ms: Spread,
    /// Process CPU time (all threads), when the OS reports it for every round.
    pub cpu_ms: Option<Spread>,
}

impl Timing {
    fn of(runs: &[RunTime]) -> Option<Timing> {
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
        let cpus: Option<Vec<f64>> = runs.iter().map(|r| r.cpu_ms).collect();
        Some(Timing {
            wall_ms: Spread::of(&walls)?,
            cpu_ms: cpus.as_deref().and_then(Spread::of),
            rounds_ms: walls,
        })
    }
}

/// How far a measured speedup can be taken as a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// At or below the ideal: a result.
    #[serde(rename = "ok")]
    Plausible,
    /// Above the ideal, but the ideal lies within the measured range: as fast as the skipped
    /// blocks allow, within the noise; shown as the ideal, not above it.
    #[serde(rename = "at_ideal")]
    WithinNoise,
    /// Above the ideal even at the low end of the measured range: the machine's load distorted
    /// the timing; not a result.
    #[serde(rename = "noisy")]
    Noisy,
}

impl Verdict {
    /// The rule: the median `speedup` against the `ideal`, allowing for the low end of the
    /// measured range, `speedup_min`.
    pub fn of(speedup: f64, speedup_min: f64, ideal: f64) -> Verdict {
        if speedup <= ideal {
            Verdict::Plausible
        } else if speedup_min <= ideal {
            Verdict::WithinNoise
        } else {
            Verdict::Noisy
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Plausible => "ok",
            Verdict::WithinNoise => "at_ideal",
            Verdict::Noisy => "noisy",
        }
    }
}

/// Speed and quality of the cached run against an uncached run of the same settings, both
/// timed in the same node run over interleaved rounds (never an assumed number).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    /// Interleaved rounds; each timed one uncached and one cached run.
    pub rounds: usize,
    /// The uncached runs.
    pub baseline: Timing,
    /// The cached runs (the first is the run the user saw, streamed live).
    pub cached: Timing,
    /// Median uncached wall time ÷ median cached wall time.
    pub speedup: f64,
    /// The range the spreads allow: slowest uncached ÷ fastest cached and the reverse.
    pub speedup_min: f64,
    pub speedup_max: f64,
    /// The same ratio in process CPU time, which follows the work rather than the load.
    pub cpu_speedup: Option<f64>,
    /// From block evaluations: what the speedup would be if only the blocks cost time.
    pub ideal_speedup: f64,
    /// `speedup / ideal_speedup`: 1 means the cache costs nothing beyond the blocks it skips.
    pub efficiency: f64,
    /// Whether the speedup can be read as a result (`ok`), is at the ideal within the noise
    /// (`at_ideal`) or is beyond it by more than the spread allows (`noisy`).
    pub verdict: Verdict,
    /// The 1-minute load average at the end of the measurement.
    pub load_average: Option<f64>,
    /// Every round gave the same image, bit for bit, as the first round of its kind.
    pub repeatable: bool,
    /// Of the cached image against the uncached one (8-bit RGB; infinite, `null` in JSON, when
    /// identical).
    pub psnr_db: f64,
    pub ssim: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(f64::MIN_POSITIVE)
}

impl Measured {
    /// The statistics of the rounds; `None` without a round of each kind. `psnr_db`, `ssim`,
    /// `repeatable` and `load_average` come as measured; the rest is derived here.
    pub fn from_rounds(
        baseline: &[RunTime],
        cached: &[RunTime],
        ideal_speedup: f64,
        quality: (f64, f64),
        repeatable: bool,
        load_average: Option<f64>,
    ) -> Option<Measured> {
        let base = Timing::of(baseline)?;
        let cach = Timing::of(cached)?;
        let speedup = ratio(base.wall_ms.median, cach.wall_ms.median);
        let speedup_min = ratio(base.wall_ms.min, cach.wall_ms.max);
        let speedup_max = ratio(base.wall_ms.max, cach.wall_ms.min);
        let cpu_speedup = base
            .cpu_ms
            .zip(cach.cpu_ms)
            .map(|(b, c)| ratio(b.median, c.median));
        Some(Measured {
            rounds: baseline.len().min(cached.len()),
            verdict: Verdict::of(speedup, speedup_min, ideal_speedup),
            baseline: base,
            cached: cach,
            speedup,
            speedup_min,
            speedup_max,
            cpu_speedup,
            ideal_speedup,
            efficiency: ratio(speedup, ideal_speedup),
            load_average,
            repeatable,
            psnr_db: quality.0,
            ssim: quality.1,
        })
    }

    /// The speedup as it may be presented, in words: a result, "at the ideal" or "noisy",
    /// never a plain number beyond the ideal. `x` is the multiplication sign to use.
    pub fn headline(&self, x: &str) -> String {
        let range = format!(
            "{:.2}–{:.2}{x} over {} round{}",
            self.speedup_min,
            self.speedup_max,
            self.rounds,
            if self.rounds == 1 { "" } else { "s" }
        );
        match self.verdict {
            Verdict::Plausible => format!(
                "{:.2}{x} ({range}; {:.0}% of the ideal {:.2}{x})",
                self.speedup,
                self.efficiency * 100.0,
                self.ideal_speedup
            ),
            Verdict::WithinNoise => format!(
                "at the ideal {:.2}{x} within the spread (median {:.2}{x}, {range})",
                self.ideal_speedup, self.speedup
            ),
            Verdict::Noisy => format!(
                "noisy measurement, not a result: median {:.2}{x} ({range}) is beyond the \
                 ideal {:.2}{x} by more than its spread; load average {}",
                self.speedup,
                self.ideal_speedup,
                self.load_average
                    .map_or("unknown".to_string(), |l| format!("{l:.2}"))
            ),
        }
    }

    /// Wall and CPU times of both kinds of run, median (min–max), in ms.
    pub fn times_text(&self) -> String {
        let spread = |s: &Spread| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max);
        let mut out = format!(
            "wall ms uncached {} → cached {}",
            spread(&self.baseline.wall_ms),
            spread(&self.cached.wall_ms)
        );
        match (&self.baseline.cpu_ms, &self.cached.cpu_ms, self.cpu_speedup) {
            (Some(b), Some(c), Some(x)) => {
                out.push_str(&format!("; CPU ms {} → {} ({x:.2}x)", spread(b), spread(c)))
            }
            _ => out.push_str("; CPU time not reported by this OS"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(walls: &[f64]) -> Vec<RunTime> {
        walls
            .iter()
            .map(|&wall_ms| RunTime {
                wall_ms,
                cpu_ms: Some(wall_ms * 2.0),
            })
            .collect()
    }

    #[test]
    fn median_and_spread_follow_numpy() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        let s = Spread::of(&[7.0]).expect("one value");
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn the_speedup_is_the_ratio_of_medians_and_its_range_comes_from_the_spreads() {
        let m = Measured::from_rounds(
            &runs(&[100.0, 90.0, 120.0]),
            &runs(&[80.0, 75.0, 100.0]),
            1.5,
            (30.0, 0.9),
            true,
            Some(1.0),
        )
        .expect("rounds");
        assert_eq!(m.rounds, 3);
        assert_eq!(m.baseline.wall_ms.median, 100.0);
        assert_eq!(m.cached.wall_ms.median, 80.0);
        assert_eq!(m.baseline.rounds_ms, vec![100.0, 90.0, 120.0]);
        assert!((m.speedup - 1.25).abs() < 1e-12);
        assert!(
            (m.speedup_min - 0.9).abs() < 1e-12,
            "slowest cached, fastest uncached"
        );
        assert!((m.speedup_max - 1.6).abs() < 1e-12);
        assert_eq!(m.cpu_speedup, Some(1.25));
        assert!((m.efficiency - 1.25 / 1.5).abs() < 1e-12);
        assert_eq!(m.verdict, Verdict::Plausible);
        let one_cpu_missing = [
            RunTime {
                wall_ms: 1.0,
                cpu_ms: None,
            },
            RunTime {
                wall_ms: 1.0,
                cpu_ms: Some(1.0),
            },
        ];
        let m = Measured::from_rounds(&one_cpu_missing, &runs(&[1.0]), 1.0, (0.0, 0.0), true, None)
            .expect("rounds");
        assert_eq!((m.baseline.cpu_ms, m.cpu_speedup), (None, None));
        assert_eq!(
            Measured::from_rounds(&[], &runs(&[1.0]), 1.0, (0.0, 0.0), true, None),
            None
        );
    }

    #[test]
    fn above_the_ideal_is_at_ideal_within_the_spread_and_noisy_beyond_it() {
        assert_eq!(Verdict::of(1.2, 1.0, 1.27), Verdict::Plausible);
        assert_eq!(Verdict::of(1.27, 1.27, 1.27), Verdict::Plausible);
        assert_eq!(Verdict::of(1.34, 1.10, 1.27), Verdict::WithinNoise);
        assert_eq!(Verdict::of(1.34, 1.27, 1.27), Verdict::WithinNoise);
        assert_eq!(Verdict::of(3.26, 1.30, 1.27), Verdict::Noisy);
        // One round has no spread: anything above the ideal is noise.
        let one = Measured::from_rounds(
            &runs(&[130.0]),
            &runs(&[100.0]),
            1.27,
            (30.0, 0.9),
            true,
            Some(3.5),
        )
        .expect("rounds");
        assert_eq!(one.verdict, Verdict::Noisy);
        let text = one.headline("x");
        assert!(
            text.starts_with("noisy measurement") && text.contains("load average 3.50"),
            "{text}"
        );
        assert!(text.contains("1.30x (1.30–1.30x over 1 round)"), "{text}");
    }

    #[test]
    fn the_headline_never_shows_a_plain_speedup_beyond_the_ideal() {
        // Median above the ideal, range reaching below it: shown as the ideal.
        let m = Measured::from_rounds(
            &runs(&[140.0, 120.0, 130.0]),
            &runs(&[100.0, 110.0, 95.0]),
            1.2,
            (30.0, 0.9),
            true,
            None,
        )
        .expect("rounds");
        assert_eq!(m.verdict, Verdict::WithinNoise);
        let text = m.headline("×");
        assert!(
            text.starts_with("at the ideal 1.20× within the spread"),
            "{text}"
        );
        let m = Measured::from_rounds(
            &runs(&[100.0, 110.0, 90.0]),
            &runs(&[100.0, 105.0, 95.0]),
            1.2,
            (30.0, 0.9),
            true,
            None,
        )
        .expect("rounds");
        assert_eq!(m.verdict, Verdict::Plausible);
        assert!(m
            .headline("x")
            .starts_with("1.00x (0.86–1.16x over 3 rounds; 83% of the ideal 1.20x)"));
        assert!(m
            .times_text()
            .contains("uncached 100.0 (90.0–110.0) → cached 100.0 (95.0–105.0)"));
    }

    #[test]
    fn cpu_time_and_load_are_read_where_the_os_reports_them() {
        if cfg!(target_os = "linux") {
            let before = process_cpu_ms().expect("linux reports CPU time");
            let mut x = 0u64;
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(50) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            std::hint::black_box(x);
            let after = process_cpu_ms().expect("linux reports CPU time");
            assert!(after >= before);
            assert!(load_average_1m().is_some_and(|l| l >= 0.0));
        }
    }
}
