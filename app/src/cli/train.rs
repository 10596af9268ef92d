//! `cachedit train`: trains the embedded default model from scratch (or resumes a run) with a
//! progress bar (step, loss, images/s, ETA), then exports the EMA weights in diffusers layout.

use anyhow::{bail, Context, Result};
use cachedit_nodes::device::DeviceSpec;
use cachedit_nodes::train::checkpoint;
use cachedit_nodes::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use cachedit_nodes::train::progress::TrainFlow;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run folder: checkpoints, loss log; resumable.
    #[arg(long, default_value = "runs/scenes-dit")]
    pub run: PathBuf,
    /// Where to write the final EMA model (diffusers layout). Default: RUN/model.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Continue the run saved in --run instead of starting a new one.
    #[arg(long)]
    pub resume: bool,
    /// Optimisation steps (a new run only; a resumed run keeps its own).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step (a new run only).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate (a new run only).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed for weights, data and noise (a new run only).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many steps in this session (the run stays resumable).
    #[arg(long)]
    pub max_session_steps: Option<u64>,
    /// Only write the EMA weights of the run's latest checkpoint to --export, and its loss log
    /// to RUN/loss.csv (no training).
    #[arg(long)]
    pub export_only: bool,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn new_config(args: &TrainArgs) -> DiffusionTrainConfig {
    let mut c = DiffusionTrainConfig::default();
    if let Some(s) = args.steps {
        c.steps = s;
    }
    if let Some(b) = args.batch {
        c.batch = b;
    }
    if let Some(lr) = args.lr {
        c.lr = lr;
    }
    if let Some(seed) = args.seed {
        c.seed = seed;
    }
    c
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Writes the loss log as CSV (step, loss).
fn write_loss_csv(path: &Path, trainer: &DiffusionTrainer) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    writeln!(f, "step,loss")?;
    for p in trainer.losses() {
        writeln!(f, "{},{:.6}", p.step, p.loss)?;
    }
    Ok(())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let device = DeviceSpec::parse(&args.device)?.open()?;
    if args.export_only {
        let trainer = DiffusionTrainer::resume(&args.run, &device)
            .with_context(|| format!("reading {}", args.run.display()))?;
        let export = args
            .export
            .clone()
            .unwrap_or_else(|| args.run.join("model"));
        trainer.export_ema(&export)?;
        write_loss_csv(&args.run.join("loss.csv"), &trainer)?;
        println!(
            "wrote the EMA weights at step {} to {}",
            trainer.step(),
            export.display()
        );
        return Ok(());
    }
    let mut trainer = if args.resume {
        if !checkpoint::exists(&args.run) {
            bail!("{}: no checkpoint to resume from", args.run.display());
        }
        if args.steps.is_some() || args.batch.is_some() || args.lr.is_some() || args.seed.is_some()
        {
            bail!("--resume continues the saved run: --steps/--batch/--lr/--seed can't change it");
        }
        DiffusionTrainer::resume(&args.run, &device)
            .with_context(|| format!("resuming {}", args.run.display()))?
    } else {
        if checkpoint::exists(&args.run) {
            bail!(
                "{}: holds a checkpoint already; pass --resume to continue it, or choose another --run",
                args.run.display()
            );
        }
        DiffusionTrainer::new(new_config(args), &device)?
    };
    let c = trainer.config().clone();
    println!(
        "training {} blocks × {} wide, {}×{} px, batch {}, {} steps (at step {}), run folder {}",
        c.model.num_layers,
        c.model.hidden_size(),
        c.model.sample_size,
        c.model.sample_size,
        c.batch,
        c.steps,
        trainer.step(),
        args.run.display()
    );

    // Ctrl+C stops after the current step and saves a checkpoint.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
        eprintln!("warning: Ctrl+C will not save a checkpoint ({e})");
    }

    let bar = ProgressBar::new(c.steps);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step());
    let session_start = trainer.step();
    let max_session = args.max_session_steps.unwrap_or(u64::MAX);
    let result = trainer.run(&args.run, &mut |p| {
        bar.set_position(p.step);
        bar.set_message(format!(
            "loss {:.4} (avg {:.4}) lr {:.2e} | {:.0} img/s | {} elapsed, ETA {}",
            p.loss,
            p.loss_avg,
            p.lr,
            p.images_per_sec,
            fmt_secs(p.elapsed_secs),
            fmt_secs(p.eta_secs)
        ));
        if p.step % 100 == 0 {
            bar.suspend(|| {
                println!(
                    "step {:>6}  loss {:.4}  avg {:.4}  |g| {:.3}  {:.0} img/s  elapsed {}",
                    p.step,
                    p.loss,
                    p.loss_avg,
                    p.grad_norm,
                    p.images_per_sec,
                    fmt_secs(p.elapsed_secs)
                )
            });
        }
        if interrupted.load(Ordering::Relaxed) || p.step - session_start >= max_session {
            TrainFlow::Stop
        } else {
            TrainFlow::Continue
        }
    });
    bar.finish_and_clear();
    write_loss_csv(&args.run.join("loss.csv"), &trainer)?;
    match result {
        Ok(()) => {}
        Err(cachedit_nodes::train::TrainError::Cancelled) => {
            println!(
                "stopped at step {}; checkpoint saved in {} (continue with --resume)",
                trainer.step(),
                args.run.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let export = args
        .export
        .clone()
        .unwrap_or_else(|| args.run.join("model"));
    trainer.export_ema(&export)?;
    println!(
        "done: {} steps in {} of training; EMA model in {}",
        trainer.step(),
        fmt_secs(trainer.elapsed_secs()),
        export.display()
    );
    Ok(())
}
