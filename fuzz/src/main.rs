//! `cachedit-fuzz`: fuzz one target or all of them, replay saved inputs.
//!
//! `run` supervises: each target runs in a child `worker` process whose memory is capped by
//! the counting allocator; a worker that dies (an abort, the cap refused) leaves the input it
//! was on, which is saved as a crash, and a fresh worker carries on with the next seed.

use anyhow::{bail, Context, Result};
use cachedit_fuzz::engine::{fuzz, run_one, Budget, Report};
use cachedit_fuzz::{alloc, targets};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(
    name = "cachedit-fuzz",
    about = "Mutation fuzzing of CacheDiT Studio's parsers and loaders"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz TARGET (or every target with --all), each in supervised worker processes.
    Run {
        /// workflow, png, config, safetensors, pytorch
        target: Option<String>,
        #[arg(long)]
        all: bool,
        /// Executions per target.
        #[arg(long)]
        iterations: Option<u64>,
        /// Seconds per target.
        #[arg(long)]
        seconds: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where crashes and the workers' notes go.
        #[arg(long, default_value = "target/fuzz")]
        out: PathBuf,
    },
    /// Replays saved inputs (files, or folders of them) through TARGET; fails on a panic.
    Replay {
        target: String,
        inputs: Vec<PathBuf>,
    },
    /// The list of targets.
    List,
    #[command(hide = true)]
    Worker {
        target: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        iterations: Option<u64>,
        #[arg(long)]
        seconds: Option<f64>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<bool> {
    match Args::parse().command {
        Cmd::List => {
            for t in targets::all() {
                println!("{}", t.name);
            }
            Ok(true)
        }
        Cmd::Worker {
            target,
            seed,
            iterations,
            seconds,
            out,
        } => {
            let t = targets::find(&target).with_context(|| format!("no target {target}"))?;
            let budget = Budget {
                iterations,
                time: seconds.map(Duration::from_secs_f64),
            };
            let current = out.join(format!("{target}.current"));
            let report = fuzz(&t, seed, &budget, &current, &out.join("crashes"))?;
            print!("{}", report.to_lines());
            Ok(true)
        }
        Cmd::Replay { target, inputs } => replay(&target, &inputs),
        Cmd::Run {
            target,
            all,
            iterations,
            seconds,
            seed,
            out,
        } => {
            let names: Vec<String> = match (target, all) {
                (_, true) => targets::all().iter().map(|t| t.name.to_string()).collect(),
                (Some(t), false) => vec![t],
                (None, false) => bail!("name a target or pass --all (see `cachedit-fuzz list`)"),
            };
            if iterations.is_none() && seconds.is_none() {
                bail!("give --iterations or --seconds");
            }
            std::fs::create_dir_all(&out)?;
            let mut clean = true;
            println!(
                "{:<12} {:>12} {:>10} {:>7} {:>7} {:>8} {:>9} {:>10} {:>8}",
                "target",
                "executions",
                "exec/s",
                "panics",
                "aborts",
                "corpus",
                "outcomes",
                "peak MiB",
                "slowest"
            );
            for name in names {
                clean &= supervise(&name, seed, iterations, seconds, &out)?;
            }
            Ok(clean)
        }
    }
}

/// Runs workers for `name` until the budget is spent; prints its row. False if anything
/// panicked or aborted.
fn supervise(
    name: &str,
    seed: u64,
    iterations: Option<u64>,
    seconds: Option<f64>,
    out: &Path,
) -> Result<bool> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut total = Report::default();
    let mut aborts = 0u64;
    let mut worker_seed = seed;
    loop {
        let left_iter = iterations.map(|n| n.saturating_sub(total.executions));
        let left_secs = seconds.map(|s| s - started.elapsed().as_secs_f64());
        if left_iter == Some(0) || left_secs.is_some_and(|s| s <= 0.0) {
            break;
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["worker", name, "--seed", &worker_seed.to_string(), "--out"])
            .arg(out);
        if let Some(n) = left_iter {
            cmd.args(["--iterations", &n.to_string()]);
        }
        if let Some(s) = left_secs {
            cmd.args(["--seconds", &format!("{s:.3}")]);
        }
        let output = cmd.output().context("starting a worker")?;
        let report = Report::from_lines(&String::from_utf8_lossy(&output.stdout));
        if output.status.success() {
            merge(&mut total, &report);
            break;
        }
        // The worker died on the input it noted: keep it, and go on with a new seed.
        aborts += 1;
        let note = out.join(format!("{name}.current"));
        let bytes = std::fs::read(&note).unwrap_or_default();
        let saved = out.join("crashes").join(format!(
            "{name}-abort-{:016x}.bin",
            cachedit_fuzz::engine::fnv(&bytes)
        ));
        std::fs::create_dir_all(out.join("crashes"))?;
        std::fs::write(&saved, &bytes)?;
        eprintln!(
            "{name}: a worker died ({}); its input is in {}",
            output.status,
            saved.display()
        );
        // An abort loses the worker's count; one execution is known (the fatal one).
        total.executions += 1;
        worker_seed = worker_seed.wrapping_add(1_000_003);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<12} {:>12} {:>10.0} {:>7} {:>7} {:>8} {:>9} {:>10.1} {:>6.1}ms",
        name,
        total.executions,
        total.executions as f64 / secs.max(1e-9),
        total.panics,
        aborts,
        total.corpus,
        total.outcomes,
        total.max_peak_bytes as f64 / f64::from(1u32 << 20),
        total.slowest_ms
    );
    for c in &total.crashes {
        let message = std::fs::read_to_string(c.with_extension("txt")).unwrap_or_default();
        let first = message.lines().next().unwrap_or("");
        println!("  panicked: {} ({first})", c.display());
    }
    Ok(total.panics == 0 && aborts == 0)
}

fn merge(total: &mut Report, r: &Report) {
    total.executions += r.executions;
    total.panics += r.panics;
    total.corpus = total.corpus.max(r.corpus);
    total.outcomes = total.outcomes.max(r.outcomes);
    total.max_peak_bytes = total.max_peak_bytes.max(r.max_peak_bytes);
    total.slowest_ms = total.slowest_ms.max(r.slowest_ms);
    total.crashes.extend(r.crashes.iter().cloned());
}

fn replay(target: &str, inputs: &[PathBuf]) -> Result<bool> {
    let t = targets::find(target).with_context(|| format!("no target {target}"))?;
    std::panic::set_hook(Box::new(|_| {}));
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                let path = e?.path();
                if path.extension().is_some_and(|x| x == "bin") {
                    files.push(path);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    let mut clean = true;
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        match run_one(&t, &bytes) {
            Ok(outcome) => println!("{}: {outcome}", f.display()),
            Err(panic) => {
                clean = false;
                println!("{}: PANIC {panic}", f.display());
            }
        }
    }
    Ok(clean)
}
