//! `cachedit run | validate | restore | models`: the headless runner over the shared executor.

use super::stats::{is_detailed_stats, RunReport};
use anyhow::{bail, Context, Result};
use cachedit_nodes::device::available_devices;
use cachedit_nodes::exec::{Event, ExecConfig, Executor, RunOutcome};
use cachedit_nodes::graph::document::{NodeId, Workflow};
use cachedit_nodes::graph::preflight::preflight;
use cachedit_nodes::graph::ron_io::{load_workflow, parse_workflow};
use cachedit_nodes::graph::validate::validate;
use cachedit_nodes::image::png_io::workflow_text_from_png;
use cachedit_nodes::models::builtin::builtin_models;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::safe_io::write_atomic;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn is_png(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Loads a workflow from a `.ron` file or from the text chunk of a PNG written by Save Image.
pub fn load_any(path: &Path, from_png: bool) -> Result<Workflow> {
    if from_png || is_png(path) {
        let text = workflow_text_from_png(path)?;
        Ok(parse_workflow(
            &text,
            &format!("{} (embedded workflow)", path.display()),
        )?)
    } else {
        Ok(load_workflow(path)?)
    }
}

/// Validates against the built-in registry, then makes the checks outside the document
/// (model paths and configs, class labels, starting latents, file-name prefixes; with
/// `output_dir`, that it can be written); all problems in one error, one line each.
fn check(wf: &Workflow, registry: &Registry, path: &Path, output_dir: Option<&Path>) -> Result<()> {
    let checked = validate(wf, registry).and_then(|()| preflight(wf, registry, output_dir));
    if let Err(errors) = checked {
        // A machine-made workflow can have thousands of problems: the first ones, counted.
        const SHOWN: usize = 20;
        let mut lines: Vec<String> = errors.iter().take(SHOWN).map(|e| e.to_string()).collect();
        if errors.len() > SHOWN {
            lines.push(format!("… and {} more problems", errors.len() - SHOWN));
        }
        bail!("{}: {}", path.display(), lines.join("; "));
    }
    Ok(())
}

pub fn validate_cmd(path: &Path) -> Result<()> {
    let wf = load_any(path, false)?;
    check(&wf, &Registry::builtin(), path, None)?;
    println!(
        "{}: ok ({} nodes, {} links)",
        path.display(),
        wf.nodes.len(),
        wf.links.len()
    );
    Ok(())
}

pub fn restore(png: &Path, output: Option<&Path>) -> Result<()> {
    let text = workflow_text_from_png(png)?;
    // Parse it so a damaged chunk is reported here, not when the .ron is opened later.
    parse_workflow(&text, &format!("{} (embedded workflow)", png.display()))?;
    match output {
        Some(path) => {
            write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{} -> {}", png.display(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

pub fn list_models() -> Result<()> {
    println!("built-in models:");
    for m in builtin_models() {
        println!("  {:<14} {}", m.name, m.description);
    }
    println!("devices: {}", available_devices().join(", "));
    Ok(())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos:>3}/{len:3} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A Sampler's progress bar, `len` units long.
fn sampler_bar(bars: &MultiProgress, wf: &Workflow, node: NodeId, len: u64) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(len));
    bar.set_style(bar_style());
    bar.set_prefix(wf.describe(node));
    bar
}

pub fn run(path: &Path, out: &Path, from_png: bool) -> Result<()> {
    let wf = load_any(path, from_png)?;
    let registry = Registry::builtin();
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating the output folder {}", out.display()))?;
    // stats.json goes there whatever the nodes: learn now, not after sampling, if it cannot.
    let probe = out.join(format!(".cachedit-write-test-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| format!("the output folder {} cannot be written", out.display()))?;
    check(&wf, &registry, path, Some(out))?;

    let executor = Executor::spawn(
        registry,
        ExecConfig {
            output_dir: out.to_path_buf(),
        },
    )?;
    let run_id = executor.run(wf.clone())?;

    let bars = MultiProgress::new();
    let mut per_sampler: HashMap<NodeId, ProgressBar> = HashMap::new();
    let mut measuring: HashSet<NodeId> = HashSet::new();
    let mut events = Vec::new();
    let outcome = loop {
        let event = executor
            .events()
            .recv()
            .context("executor stopped unexpectedly")?;
        if event.run_id() != run_id {
            continue;
        }
        match &event {
            Event::Step { node, step, .. } => {
                let bar = per_sampler
                    .entry(*node)
                    .or_insert_with(|| sampler_bar(&bars, &wf, *node, step.total as u64));
                // A measuring Sampler's bar follows its rounds (the Measure events) instead.
                if !measuring.contains(node) {
                    bar.set_position(step.index as u64 + 1);
                    bar.set_message(format!("{:.1} ms/step", step.ms));
                }
            }
            Event::Measure { node, progress, .. } => {
                let runs = 2 * progress.rounds * progress.steps;
                let bar = per_sampler
                    .entry(*node)
                    .or_insert_with(|| sampler_bar(&bars, &wf, *node, runs as u64));
                measuring.insert(*node);
                bar.set_length(runs as u64);
                bar.set_position((progress.runs_done * progress.steps + progress.step) as u64);
                bar.set_message(progress.label());
            }
            Event::Info { node, text, .. } => {
                let line = format!("{}: {text}", wf.describe(*node));
                // Progress bars hide off a terminal, and their println with them.
                if bars.is_hidden() {
                    eprintln!("{line}");
                } else {
                    let _ = bars.println(line);
                }
            }
            Event::NodeFinished { node, ms, .. } => {
                if let Some(bar) = per_sampler.get(node) {
                    bar.finish_with_message(format!("done in {:.2} s", ms / 1e3));
                }
            }
            Event::CompareProgress { node, progress, .. } => {
                let total = (progress.runs_total * progress.steps) as u64;
                let bar = per_sampler
                    .entry(*node)
                    .or_insert_with(|| sampler_bar(&bars, &wf, *node, total));
                bar.set_length(total);
                bar.set_position((progress.runs_done * progress.steps + progress.step) as u64);
                let who = match progress.subject {
                    cachedit_nodes::compare::Subject::Reference => "reference".to_string(),
                    cachedit_nodes::compare::Subject::Cell(i) => format!("config {}", i + 1),
                };
                bar.set_message(format!(
                    "sample {} round {} {who}",
                    progress.sample + 1,
                    progress.round + 1
                ));
            }
            Event::Comparison {
                node,
                comparison,
                finished: true,
                ..
            } => {
                let rows = cachedit_nodes::compare::table::rows(comparison);
                let table = cachedit_nodes::compare::table::text(&rows);
                let name = format!("compare_{}", node.0);
                for (ext, text) in [
                    ("csv", cachedit_nodes::compare::table::csv(&rows)),
                    ("json", serde_json::to_string_pretty(&rows)?),
                ] {
                    let file = out.join(format!("{name}.{ext}"));
                    write_atomic(&file, text.as_bytes())
                        .with_context(|| format!("writing {}", file.display()))?;
                    bars.suspend(|| println!("wrote {}", file.display()));
                }
                bars.suspend(|| println!("{}:\n{table}", wf.describe(*node)));
            }
            Event::FileWritten { path, .. } => {
                bars.suspend(|| println!("wrote {}", path.display()));
            }
            Event::Stats { node, stats, .. } if is_detailed_stats(&wf, *node) => {
                let text = stats.summary_text();
                bars.suspend(|| println!("{}:\n{text}", wf.describe(*node)));
            }
            _ => {}
        }
        let finished = match &event {
            Event::RunFinished { outcome, .. } => Some(*outcome),
            _ => None,
        };
        events.push(event);
        if let Some(outcome) = finished {
            break outcome;
        }
    };

    let report = RunReport::from_events(path.display().to_string(), &wf, &events);
    let stats_path = out.join("stats.json");
    let json = serde_json::to_string_pretty(&report)?;
    // Atomic, and never through a symlink planted in the output folder.
    write_atomic(&stats_path, json.as_bytes())
        .with_context(|| format!("writing {}", stats_path.display()))?;
    match outcome {
        RunOutcome::Completed => {
            println!(
                "finished in {:.2} s; stats in {}",
                report.total_ms / 1e3,
                stats_path.display()
            );
            Ok(())
        }
        RunOutcome::Cancelled => bail!("{}: run cancelled", path.display()),
        RunOutcome::Failed => {
            let message = report.errors.join("; ");
            bail!("{}: {message}", path.display())
        }
    }
}

pub fn dataset_grid(path: &Path, per_class: usize) -> Result<()> {
    let grid = cachedit_nodes::dataset::sample_grid(per_class.max(1), 32, 3)?;
    cachedit_nodes::image::png_io::write_png_atomic(path, &grid, &[])?;
    let names = cachedit_nodes::dataset::scenes::CLASSES.join(", ");
    println!("wrote {} (rows: {names})", path.display());
    Ok(())
}
