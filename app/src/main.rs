//! `cachedit`: CacheDiT Studio. With no arguments it opens the node editor; the subcommands
//! are the headless runner and tools.

mod cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cachedit",
    version,
    about = "CacheDiT Studio: run and compare DiT step caching"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Opens the node editor (what `cachedit` with no arguments does), optionally with a file.
    Edit {
        /// Workflow (.ron) or PNG written by Save Image to open.
        workflow: Option<PathBuf>,
        /// Run the workflow as soon as the window is open.
        #[arg(long)]
        run: bool,
    },
    /// Runs a workflow (.ron, or a PNG written by Save Image) and writes images + stats.json.
    Run {
        /// Workflow file (.ron) or PNG with an embedded workflow.
        workflow: PathBuf,
        /// Output folder for images and stats.json.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Read the workflow from a PNG written by Save Image (also implied by a .png path).
        #[arg(long)]
        from_png: bool,
    },
    /// Checks a workflow without running it.
    Validate { workflow: PathBuf },
    /// Writes the workflow embedded in a PNG to a .ron file (or stdout).
    Restore {
        png: PathBuf,
        /// Where to write the .ron (stdout when left out).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Lists the built-in models and the devices this build can use.
    Models,
    /// Writes a grid of the built-in dataset's samples (one row per class) as PNG.
    Dataset {
        /// Output PNG.
        #[arg(long, default_value = "dataset_grid.png")]
        grid: PathBuf,
        /// Samples per class.
        #[arg(long, default_value_t = 12)]
        per_class: usize,
    },
    /// Trains the embedded default model from scratch (or resumes a run).
    Train(cli::train::TrainArgs),
    /// Trains the quality classifier on the dataset generator's images.
    TrainClassifier(cli::eval::TrainClassifierArgs),
    /// Checks the default model: classifier held-out accuracy and conditional accuracy.
    Eval(cli::eval::EvalArgs),
    /// Times the DiT forward per step on a small and a DiT-XL/2-sized config.
    Bench(cli::bench::BenchArgs),
    /// Benchmarks the step cache: speed (measured vs. ideal) and quality (PSNR, SSIM) of the
    /// reference configs against uncached runs at 25 and 50 steps.
    BenchCache(cli::bench_cache::BenchCacheArgs),
    /// Holds a model loaded and times forwards and sampling runs asked for on stdin (JSON
    /// lines), for a driver that interleaves them with another engine's
    /// (tools/bench_vs_torch.py).
    BenchServe(cli::bench_serve::BenchServeArgs),
    /// Fits TeaCache's rescale polynomial for a model from uncached runs (paste the result
    /// into the config node's `coefficients`).
    CalibrateTeacache(cli::calibrate::CalibrateTeaCacheArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Run {
            workflow,
            out,
            from_png,
        }) => cli::run::run(&workflow, &out, from_png),
        Some(Command::Validate { workflow }) => cli::run::validate_cmd(&workflow),
        Some(Command::Restore { png, output }) => cli::run::restore(&png, output.as_deref()),
        Some(Command::Models) => cli::run::list_models(),
        Some(Command::Dataset { grid, per_class }) => cli::run::dataset_grid(&grid, per_class),
        Some(Command::Bench(bench)) => cli::bench::run(&bench),
        Some(Command::Train(train)) => cli::train::run(&train),
        Some(Command::TrainClassifier(args)) => cli::eval::train_classifier_cmd(&args),
        Some(Command::Eval(args)) => cli::eval::eval_cmd(&args),
        Some(Command::BenchCache(bench)) => cli::bench_cache::run(&bench),
        Some(Command::BenchServe(args)) => cli::bench_serve::run(&args),
        Some(Command::CalibrateTeacache(args)) => cli::calibrate::run(&args),
        Some(Command::Edit { workflow, run }) => cachedit::gui::run_editor(workflow, run),
        None => cachedit::gui::run_editor(None, false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context names the file or node, then the cause.
            // No backtraces (RUST_BACKTRACE makes candle attach them to its errors).
            let chain: Vec<String> = e
                .chain()
                .map(|c| cachedit_nodes::exec::message::one_line(&c.to_string()))
                .collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
