//! One worker's loop: mutate an input of the corpus, note it where the supervisor can find it
//! should the process die, run the target under `catch_unwind` with the allocator's peak
//! reset, keep inputs that reach a new outcome, save those that panic.

use crate::alloc;
use crate::mutate::{mutate, Rng};
use crate::targets::Target;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An input holding more than this is saved as `<target>-peak.bin` beside the crashes.
const PEAK_WORTH_SAVING: usize = 64 << 20;

/// The most inputs the corpus keeps, and the most bytes: the corpus lives under the worker's
/// memory cap, so it must not crowd out the inputs it runs.
const MAX_CORPUS: usize = 2000;
const MAX_CORPUS_BYTES: usize = 64 << 20;

/// The most distinct outcomes remembered (labels are short; this bounds their memory too).
const MAX_OUTCOMES: usize = 100_000;

/// The most panicking inputs one worker saves (one per distinct message).
const MAX_SAVED_CRASHES: usize = 20;

/// What a worker did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub executions: u64,
    pub panics: u64,
    /// Distinct outcome labels seen.
    pub outcomes: usize,
    pub corpus: usize,
    /// The most bytes live during one execution (above what was live before it).
    pub max_peak_bytes: usize,
    /// The input size at that peak.
    pub max_peak_input: usize,
    pub slowest_ms: f64,
    pub seconds: f64,
    /// Files written for inputs that panicked.
    pub crashes: Vec<PathBuf>,
}

impl Report {
    /// `key=value` lines, what the supervisor reads back from a worker.
    pub fn to_lines(&self) -> String {
        let crashes: String = self
            .crashes
            .iter()
            .map(|p| format!("crash={}\n", p.display()))
            .collect();
        crashes + &format!(
            "executions={}\npanics={}\noutcomes={}\ncorpus={}\nmax_peak_bytes={}\nmax_peak_input={}\nslowest_ms={:.3}\nseconds={:.3}\n",
            self.executions,
            self.panics,
            self.outcomes,
            self.corpus,
            self.max_peak_bytes,
            self.max_peak_input,
            self.slowest_ms,
            self.seconds
        )
    }

    pub fn from_lines(text: &str) -> Report {
        let mut r = Report::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "executions" => r.executions = v.parse().unwrap_or(0),
                "panics" => r.panics = v.parse().unwrap_or(0),
                "outcomes" => r.outcomes = v.parse().unwrap_or(0),
                "corpus" => r.corpus = v.parse().unwrap_or(0),
                "max_peak_bytes" => r.max_peak_bytes = v.parse().unwrap_or(0),
                "max_peak_input" => r.max_peak_input = v.parse().unwrap_or(0),
                "slowest_ms" => r.slowest_ms = v.parse().unwrap_or(0.0),
                "seconds" => r.seconds = v.parse().unwrap_or(0.0),
                "crash" => r.crashes.push(PathBuf::from(v)),
                _ => {}
            }
        }
        r
    }
}

/// How long and how hard a worker runs.
#[derive(Debug, Clone)]
pub struct Budget {
    pub iterations: Option<u64>,
    pub time: Option<Duration>,
}

impl Budget {
    fn done(&self, executions: u64, started: Instant) -> bool {
        self.iterations.is_some_and(|n| executions >= n)
            || self.time.is_some_and(|t| started.elapsed() >= t)
    }
}

/// FNV-1a, to name a saved input by its content.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs one input through `target`, catching a panic; returns the outcome or the panic text.
pub fn run_one(target: &Target, input: &[u8]) -> Result<String, String> {
    std::panic::catch_unwind(|| (target.run)(input))
        .map_err(|p| cachedit_nodes::exec::message::panic_text(p.as_ref()))
}

/// The worker loop. `current` receives each input before it runs (so that an abort leaves it
/// behind); panicking inputs are written to `crash_dir`.
pub fn fuzz(
    target: &Target,
    seed: u64,
    budget: &Budget,
    current: &Path,
    crash_dir: &Path,
) -> std::io::Result<Report> {
    // Panics are expected and counted; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    let mut outcomes: BTreeSet<String> = BTreeSet::new();
    for s in &corpus {
        if let Ok(o) = run_one(target, s) {
            outcomes.insert(o);
        }
    }
    let mut signatures: BTreeSet<String> = BTreeSet::new();
    let mut corpus_bytes: usize = corpus.iter().map(Vec::len).sum();
    let mut note = File::create(current)?;
    let mut report = Report::default();
    let started = Instant::now();
    while !budget.done(report.executions, started) {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus, target.max_len);
        note_input(&mut note, &input)?;
        let before = alloc::live();
        alloc::reset_peak();
        let t = Instant::now();
        let outcome = run_one(target, &input);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let peak = alloc::peak().saturating_sub(before);
        report.executions += 1;
        report.slowest_ms = report.slowest_ms.max(ms);
        if peak > report.max_peak_bytes {
            report.max_peak_bytes = peak;
            report.max_peak_input = input.len();
            // The input that held the most so far, to look into (not a crash: it stayed
            // under the cap).
            if peak > PEAK_WORTH_SAVING {
                std::fs::create_dir_all(crash_dir)?;
                std::fs::write(crash_dir.join(format!("{}-peak.bin", target.name)), &input)?;
            }
        }
        match outcome {
            Ok(label) => {
                let novel = outcomes.len() < MAX_OUTCOMES && outcomes.insert(label);
                if novel
                    && corpus.len() < MAX_CORPUS
                    && corpus_bytes + input.len() <= MAX_CORPUS_BYTES
                {
                    corpus_bytes += input.len();
                    corpus.push(input);
                }
            }
            Err(message) => {
                report.panics += 1;
                // One saved input per distinct panic (numbers aside): a bug that fires on
                // every mutation must not fill the disk.
                let signature: String = message
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(160)
                    .collect();
                if !signatures.insert(signature) || signatures.len() > MAX_SAVED_CRASHES {
                    continue;
                }
                std::fs::create_dir_all(crash_dir)?;
                let path = crash_dir.join(format!("{}-{:016x}.bin", target.name, fnv(&input)));
                std::fs::write(&path, &input)?;
                std::fs::write(path.with_extension("txt"), message)?;
                report.crashes.push(path);
            }
        }
    }
    report.outcomes = outcomes.len();
    report.corpus = corpus.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn note_input(note: &mut File, input: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    note.set_len(0)?;
    note.seek(SeekFrom::Start(0))?;
    note.write_all(input)
}
