//! `cachedit train-classifier` and `cachedit eval`: the quality classifier and the honest check
//! of the default model (held-out classifier accuracy, conditional accuracy of samples).

use anyhow::{bail, Context, Result};
use cachedit_nodes::dataset::scenes::CLASSES;
use cachedit_nodes::device::DeviceSpec;
use cachedit_nodes::eval::classifier::SceneClassifier;
use cachedit_nodes::eval::conditional::{conditional_accuracy, ConditionalCheck};
use cachedit_nodes::image::grid::tile_grid;
use cachedit_nodes::image::png_io::write_png_atomic;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::train::classifier::{
    heldout_accuracy, train_classifier, ClassifierTrainConfig,
};
use cachedit_nodes::train::progress::TrainFlow;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The bars: the classifier must be this accurate on held-out images, and the model's
/// samples must be labelled as asked this often.
pub const MIN_HELDOUT_ACCURACY: f64 = 0.97;
pub const MIN_CONDITIONAL_ACCURACY: f64 = 0.90;

#[derive(Debug, Args)]
pub struct TrainClassifierArgs {
    /// Output folder for classifier.safetensors.
    #[arg(long, default_value = "models/scene-classifier")]
    pub out: PathBuf,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Held-out images per class for the accuracy report.
    #[arg(long, default_value_t = 200)]
    pub heldout_per_class: usize,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model: built-in name or diffusers checkpoint folder.
    #[arg(long, default_value = "scenes-dit")]
    pub model: String,
    /// Classifier weights (.safetensors); the built-in one when left out.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Generated samples per class.
    #[arg(long, default_value_t = 20)]
    pub per_class: usize,
    /// Held-out dataset images per class for the classifier's accuracy.
    #[arg(long, default_value_t = 200)]
    pub heldout_per_class: usize,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    #[arg(long, default_value_t = 4.0)]
    pub guidance: f64,
    /// Also write a grid of the generated samples (one row per class).
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Samples per class shown in the grid.
    #[arg(long, default_value_t = 10)]
    pub grid_per_class: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_per_class(title: &str, per_class: &[f64]) {
    println!("{title}");
    for (name, acc) in CLASSES.iter().zip(per_class) {
        println!("  {name:<10} {:>6.1}%", acc * 100.0);
    }
}

pub fn train_classifier_cmd(args: &TrainClassifierArgs) -> Result<()> {
    let device = DeviceSpec::parse("cpu")?.open()?;
    let mut config = ClassifierTrainConfig::default();
    if let Some(s) = args.steps {
        config.steps = s;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    let progress = bar(config.steps);
    let started = Instant::now();
    let tensors = train_classifier(&config, &device, &mut |p| {
        progress.set_position(p.step);
        progress.set_message(format!(
            "loss {:.4} (avg {:.4}) | {:.0} img/s | ETA {:.0} s",
            p.loss, p.loss_avg, p.images_per_sec, p.eta_secs
        ));
        TrainFlow::Continue
    })?;
    progress.finish_and_clear();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join("classifier.safetensors");
    candle_core::safetensors::save(&tensors, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "trained {} steps in {:.0} s; wrote {}",
        config.steps,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    let classifier = SceneClassifier::load(&path, &device)?;
    let (acc, per) = heldout_accuracy(&classifier, args.heldout_per_class, &device)?;
    print_per_class(
        &format!(
            "held-out accuracy {:.2}% ({} images per class)",
            acc * 100.0,
            args.heldout_per_class
        ),
        &per,
    );
    Ok(())
}

fn load_classifier(path: Option<&Path>, device: &candle_core::Device) -> Result<SceneClassifier> {
    match path {
        Some(p) => SceneClassifier::load(p, device)
            .with_context(|| format!("loading classifier {}", p.display())),
        None => SceneClassifier::builtin(device).context("loading the built-in classifier"),
    }
}

pub fn eval_cmd(args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    let model = load_model(&args.model, "f32", &args.device)
        .with_context(|| format!("loading model {}", args.model))?;
    let classifier = load_classifier(args.classifier.as_deref(), &model.device)?;

    let (heldout, heldout_per) =
        heldout_accuracy(&classifier, args.heldout_per_class, &model.device)?;
    print_per_class(
        &format!(
            "classifier held-out accuracy: {:.2}% ({} dataset images per class)",
            heldout * 100.0,
            args.heldout_per_class
        ),
        &heldout_per,
    );

    let check = ConditionalCheck {
        per_class: args.per_class,
        steps: args.steps,
        guidance: args.guidance,
        ..ConditionalCheck::default()
    };
    use cachedit_nodes::models::blocks::BlockTransformer;
    let progress = bar(model.model.latent().classes.unwrap_or(0) as u64);
    progress.set_message("sampling");
    let report = conditional_accuracy(&model.model, &classifier, &check, &mut |class, ok, n| {
        progress.inc(1);
        progress.set_message(format!(
            "{}: {ok}/{n}",
            CLASSES.get(class).copied().unwrap_or("?")
        ));
    })?;
    progress.finish_and_clear();
    let per: Vec<f64> = report
        .per_class
        .iter()
        .map(|&(ok, n)| ok as f64 / n.max(1) as f64)
        .collect();
    print_per_class(
        &format!(
            "conditional accuracy of {}: {:.2}% ({} samples per class, {} DPM-Solver++ steps, guidance {})",
            args.model,
            report.accuracy() * 100.0,
            args.per_class,
            args.steps,
            args.guidance
        ),
        &per,
    );
    if let Some(grid_path) = &args.grid {
        let rows: Vec<_> = report
            .images
            .iter()
            .map(|row| row.iter().take(args.grid_per_class).cloned().collect())
            .collect();
        write_png_atomic(grid_path, &tile_grid(&rows, 3)?, &[])?;
        println!("wrote {}", grid_path.display());
    }
    println!("evaluated in {:.1} s", started.elapsed().as_secs_f64());
    if heldout < MIN_HELDOUT_ACCURACY || report.accuracy() < MIN_CONDITIONAL_ACCURACY {
        bail!(
            "below the bar: held-out {:.2}% (needs ≥ {:.0}%), conditional {:.2}% (needs ≥ {:.0}%)",
            heldout * 100.0,
            MIN_HELDOUT_ACCURACY * 100.0,
            report.accuracy() * 100.0,
            MIN_CONDITIONAL_ACCURACY * 100.0
        );
    }
    println!("PASS: held-out ≥ 97%, conditional ≥ 90%");
    Ok(())
}
