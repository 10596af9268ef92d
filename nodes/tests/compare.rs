//! The comparison runner on a real DiT (the built-in `random-tiny`): the uncached reference runs
//! once per (seed, class) and round however many cells there are, every cell starts from the
//! reference's noise, and each cell's numbers equal what a plain cached run of the same config
//! reports.

use cachedit_nodes::cache::{CacheSummary, StepCache, StepCacheConfig, Strategy};
use cachedit_nodes::compare::{run_comparison, Cell, CompareProgress, CompareSpec, Subject};
use cachedit_nodes::image::convert::image_from_tensor;
use cachedit_nodes::metrics::psnr;
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::models::AnyModel;
use cachedit_nodes::sampling::denoise::{denoise, initial_noise, CfgMode, Flow, SampleSettings};
use cachedit_nodes::schedulers::{SchedulerConfig, SchedulerKind};
use candle_core::Device;
use std::sync::Arc;

fn model() -> AnyModel {
    load_model("random-tiny", "f32", "cpu")
        .expect("built-in model")
        .model
}

fn settings() -> SampleSettings {
    SampleSettings {
        class_labels: vec![0],
        prompt: None,
        seed: 0,
        steps: 8,
        guidance: 4.0,
        cfg_mode: CfgMode::Batched,
        scheduler: SchedulerKind::DpmSolverMultistep,
        scheduler_config: SchedulerConfig::default(),
        size: None,
    }
}

fn adaptive() -> StepCacheConfig {
    let mut c = StepCacheConfig::studio_default();
    c.noise_scale = 0.0;
    c.db.max_warmup_steps = 2;
    c.db.fn_compute_blocks = 1;
    // Far above random-tiny's diffs: every step past warmup may reuse, within the limits.
    c.db.residual_diff_threshold = 10.0;
    c
}

fn fixed() -> StepCacheConfig {
    let mut c = adaptive();
    c.strategy = Strategy::Fixed;
    c.skip_interval = 2;
    c
}

fn spec(cells: Vec<Cell>, rounds: usize) -> CompareSpec {
    CompareSpec {
        settings: settings(),
        seeds: vec![5, 6],
        classes: vec![1],
        cells,
        rounds,
    }
}

fn cell(config: Option<StepCacheConfig>) -> Cell {
    Cell {
        config: config.map(Arc::new),
    }
}

/// Runs the comparison, counting the runs started per subject.
fn run(dit: &AnyModel, spec: &CompareSpec) -> (cachedit_nodes::compare::Comparison, Vec<Subject>) {
    let mut started = Vec::new();
    let mut on_progress = |p: &CompareProgress| {
        if p.step == 1 {
            started.push(p.subject);
        }
        Flow::Continue
    };
    let mut partial = 0;
    let out = run_comparison(dit, None, spec, &mut on_progress, &mut |_| partial += 1)
        .expect("comparison runs");
    assert_eq!(
        partial,
        spec.samples().len(),
        "one update per finished sample"
    );
    (out, started)
}

#[test]
fn the_reference_runs_once_per_sample_and_round_however_many_cells() {
    let dit = model();
    for (cells, rounds) in [(1, 1), (4, 1), (2, 2)] {
        let configs = [Some(adaptive()), Some(fixed()), None, Some(adaptive())];
        let spec = spec(
            configs.iter().take(cells).cloned().map(cell).collect(),
            rounds,
        );
        let (out, started) = run(&dit, &spec);
        let samples = spec.samples().len();
        let references = started.iter().filter(|s| **s == Subject::Reference).count();
        assert_eq!(
            references,
            samples * rounds,
            "{cells} cells, {rounds} rounds"
        );
        assert_eq!(started.len(), samples * rounds * (cells + 1));
        assert_eq!(out.reference.runs.len(), samples * rounds);
        for c in &out.cells {
            assert_eq!(c.runs.len(), samples * rounds);
            assert_eq!(c.samples.len(), samples);
            assert!(c.repeatable, "rounds reproduce their first image");
        }
    }
}

#[test]
fn every_cell_starts_from_the_reference_noise_and_matches_a_plain_cached_run() {
    let dit = model();
    let spec = spec(
        vec![cell(None), cell(Some(adaptive())), cell(Some(fixed()))],
        1,
    );
    let (out, _) = run(&dit, &spec);
    // An uncached cell is the reference bit for bit: the same noise, the same settings.
    for (r, c) in out.reference.samples.iter().zip(&out.cells[0].samples) {
        assert_eq!(r.image, c.image, "seed {} class {}", r.seed, r.class);
        assert_eq!(c.psnr_db, Some(f64::INFINITY));
    }
    // Each cached cell equals a cached run of its own, sample by sample, in image, quality
    // and call counts.
    for (index, config) in [(1, adaptive()), (2, fixed())] {
        let result = &out.cells[index];
        let (mut calls, mut reused, mut blocks, mut uncached_blocks) = (0, 0, 0, 0);
        for (sample, reference) in result.samples.iter().zip(&out.reference.samples) {
            let s = SampleSettings {
                seed: sample.seed,
                class_labels: vec![sample.class],
                prompt: None,
                ..settings()
            };
            let noise = initial_noise(&dit, &s, &Device::Cpu).expect("noise");
            let mut hook = StepCache::new(Arc::new(config.clone()));
            let mut records = Vec::new();
            let done = denoise(&dit, &s, &noise, &mut hook, &mut |p| {
                records.extend(p.calls.iter().cloned());
                Flow::Continue
            })
            .expect("cached run");
            let image = image_from_tensor(&done.sample).expect("image").remove(0);
            assert_eq!(sample.image, image);
            let p = psnr(&reference.image, &image).expect("psnr");
            assert_eq!(sample.psnr_db, Some(p));
            let summary = CacheSummary::from_records(&result.signature, &records, 0);
            calls += summary.calls;
            reused += summary.reused_calls;
            blocks += summary.block_evaluations;
            uncached_blocks += summary.block_evaluations_uncached;
        }
        assert_eq!(
            (result.calls, result.reused_calls),
            (calls, reused),
            "cell {index}"
        );
        assert!(reused > 0, "cell {index} reuses something");
        assert_eq!(
            result.ideal_speedup(),
            uncached_blocks as f64 / blocks as f64
        );
        assert_eq!(result.signature, config.signature());
    }
    // Speedups come from the interleaved wall times.
    let (median, low, high) = out.speedup(1).expect("speedup");
    assert!(low <= median && median <= high);
}

#[test]
fn no_samples_is_an_error_naming_the_field() {
    let dit = model();
    let mut s = spec(vec![cell(Some(adaptive()))], 1);
    s.seeds.clear();
    let err = run_comparison(&dit, None, &s, &mut |_| Flow::Continue, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("seeds"), "{err}");
}

#[test]
fn a_cancel_stops_the_comparison() {
    let dit = model();
    let s = spec(vec![cell(Some(adaptive()))], 1);
    let mut steps = 0;
    let err = run_comparison(
        &dit,
        None,
        &s,
        &mut |_| {
            steps += 1;
            if steps > 12 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, cachedit_nodes::sampling::SamplingError::Cancelled),
        "{err}"
    );
}

#[test]
fn class_kept_is_the_share_of_samples_labelled_like_their_reference() {
    let dit = model();
    let s = spec(vec![cell(None), cell(Some(fixed()))], 1);
    let (mut out, _) = run(&dit, &s);
    // A stand-in classifier: the label is the image's red mean, in 64 bands. The uncached
    // cell is the reference bit for bit, so it keeps every class.
    let classify = |images: &[cachedit_nodes::image::RgbImage]| -> Result<Vec<u32>, String> {
        Ok(images
            .iter()
            .map(|img| {
                let red: u64 = img.pixels.iter().step_by(3).map(|&v| u64::from(v)).sum();
                (red / (img.pixels.len() as u64 / 3) / 4) as u32
            })
            .collect())
    };
    cachedit_nodes::compare::judge_class_kept(&mut out, &classify).expect("judged");
    assert_eq!(out.cells[0].class_kept, Some(1.0));
    let labels = |cell: &cachedit_nodes::compare::CellResult| {
        let images: Vec<_> = cell.samples.iter().map(|x| x.image.clone()).collect();
        classify(&images).expect("labels")
    };
    let (r, c) = (labels(&out.reference), labels(&out.cells[1]));
    let kept = r.iter().zip(&c).filter(|(a, b)| a == b).count() as f64 / r.len() as f64;
    assert_eq!(out.cells[1].class_kept, Some(kept));
    let rows = cachedit_nodes::compare::table::rows(&out);
    assert_eq!(rows[0].class_kept, None, "the reference row has none");
    assert_eq!(rows[1].class_kept, Some(1.0));
}

#[test]
fn feature_distance_is_one_minus_cosine_to_the_reference_and_zero_for_the_same_image() {
    let dit = model();
    let s = spec(vec![cell(None), cell(Some(fixed()))], 1);
    let (mut out, _) = run(&dit, &s);
    // Stand-ins: features are the mean of each colour channel.
    let embed = |images: &[cachedit_nodes::image::RgbImage]| -> Result<Vec<Vec<f32>>, String> {
        Ok(images
            .iter()
            .map(|img| {
                (0..3)
                    .map(|c| {
                        let v: Vec<f32> = img
                            .pixels
                            .iter()
                            .skip(c)
                            .step_by(3)
                            .map(|&p| f32::from(p))
                            .collect();
                        v.iter().sum::<f32>() / v.len() as f32
                    })
                    .collect()
            })
            .collect())
    };
    let classify = |images: &[cachedit_nodes::image::RgbImage]| -> Result<Vec<u32>, String> {
        Ok(vec![0; images.len()])
    };
    cachedit_nodes::compare::judge_with_classifier(&mut out, &classify, &embed).expect("judged");
    for sample in &out.cells[0].samples {
        assert!(sample.feature_distance.expect("judged") < 1e-12);
    }
    for (sample, reference) in out.cells[1].samples.iter().zip(&out.reference.samples) {
        let f = embed(std::slice::from_ref(&sample.image))
            .expect("f")
            .remove(0);
        let r = embed(std::slice::from_ref(&reference.image))
            .expect("r")
            .remove(0);
        let expected = cachedit_nodes::compare::cosine_distance(&f, &r);
        assert_eq!(sample.feature_distance, Some(expected));
    }
    assert_eq!(
        cachedit_nodes::compare::cosine_distance(&[1.0, 0.0], &[0.0, 2.0]),
        1.0
    );
    assert!(cachedit_nodes::compare::cosine_distance(&[1.0, 2.0], &[2.0, 4.0]) < 1e-12);
    let rows = cachedit_nodes::compare::table::rows(&out);
    assert!(rows[2].feature_distance.is_some() && rows[0].feature_distance.is_none());
}
