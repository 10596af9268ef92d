//! A Sampler started from a latent file reproduces a PyTorch run: the starting noise that
//! cache-dit's trace drew with torch (`fixtures/cache_traces/`), written as `.npy` and as
//! `.safetensors`, gives the same cached steps as cache-dit and the image of cache-dit's final
//! latents; a latent that does not fit the model is refused before anything runs.

use cachedit_nodes::exec::{Event, ExecConfig, Executor, RunOutcome};
use cachedit_nodes::graph::document::{PortRef, Value, Workflow};
use cachedit_nodes::image::convert::image_from_tensor;
use cachedit_nodes::image::png_io::read_png;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::sampling::stats::SamplerStats;
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn traces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cache_traces")
}

/// The trace `name`: its JSON entry and the fixture's tensors.
fn trace(name: &str) -> (Json, HashMap<String, Tensor>) {
    let json = std::fs::read_to_string(traces().join("traces.json")).expect("traces.json");
    let doc: Json = serde_json::from_str(&json).expect("parses");
    let entry = doc["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["name"] == name)
        .expect("the trace is in the fixture")
        .clone();
    let tensors = candle_core::safetensors::load(traces().join("traces.safetensors"), &Device::Cpu)
        .expect("traces.safetensors");
    (entry, tensors)
}

/// `values` as a float32 `.npy` of `shape`, as `numpy.save` writes it.
fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write npy");
}

/// Load Model (scenes-dit) → DBCache config of the trace → Sampler (latent file) → Save Image.
fn workflow(entry: &Json, latent: &Path) -> Workflow {
    let mut wf = Workflow::default();
    let load = wf.add_node("LoadModel", [0.0, 0.0]);
    let cache = wf.add_node("CacheDitAdvancedConfig", [0.0, 200.0]);
    let sampler = wf.add_node("Sampler", [300.0, 0.0]);
    let save = wf.add_node("SaveImage", [600.0, 0.0]);
    let c = &entry["cache"];
    let int = |v: &Json| Value::Int(v.as_i64().expect("int"));
    for (name, value) in [
        ("strategy", Value::Text("adaptive".into())),
        ("noise_scale", Value::Float(0.0)),
        ("warmup", int(&c["max_warmup_steps"])),
        ("warmup_interval", int(&c["warmup_interval"])),
        ("Fn_compute_blocks", int(&c["Fn_compute_blocks"])),
        ("Bn_compute_blocks", int(&c["Bn_compute_blocks"])),
        ("max_cached_steps", int(&c["max_cached_steps"])),
        (
            "max_continuous_cached_steps",
            int(&c["max_continuous_cached_steps"]),
        ),
        (
            "residual_diff_threshold",
            Value::Float(c["residual_diff_threshold"].as_f64().expect("threshold")),
        ),
    ] {
        assert!(wf.set_param(cache, name, value), "{name}");
    }
    let run = &entry["run"];
    for (name, value) in [
        ("class_label", int(&run["class_label"])),
        ("steps", int(&run["steps"])),
        (
            "guidance",
            Value::Float(run["guidance"].as_f64().expect("guidance")),
        ),
        ("latent_file", Value::Text(latent.display().to_string())),
    ] {
        assert!(wf.set_param(sampler, name, value), "{name}");
    }
    wf.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"));
    wf.connect(PortRef::new(cache, "cache"), PortRef::new(sampler, "cache"));
    wf.connect(PortRef::new(sampler, "image"), PortRef::new(save, "image"));
    wf
}

/// Runs `wf`; returns the outcome, the errors, the sampler's stats and the files written.
fn run(
    wf: &Workflow,
    out: &Path,
) -> (
    RunOutcome,
    Vec<String>,
    Option<Arc<SamplerStats>>,
    Vec<PathBuf>,
) {
    let exec = Executor::spawn(
        Registry::builtin(),
        ExecConfig {
            output_dir: out.to_path_buf(),
        },
    )
    .expect("executor");
    let id = exec.run(wf.clone()).expect("run starts");
    let (mut errors, mut stats, mut files) = (Vec::new(), None, Vec::new());
    loop {
        let event = exec
            .events()
            .recv_timeout(Duration::from_secs(300))
            .expect("event");
        if event.run_id() != id {
            continue;
        }
        match event {
            Event::NodeError { message, .. } => errors.push(message),
            Event::Stats { stats: s, .. } => stats = Some(s),
            Event::FileWritten { path, .. } => files.push(path),
            Event::RunFinished { outcome, .. } => return (outcome, errors, stats, files),
            _ => {}
        }
    }
}

fn cached_steps(stats: &SamplerStats) -> Vec<usize> {
    stats
        .calls
        .iter()
        .filter(|c| c.decision == cachedit_nodes::cache::Decision::Reused)
        .map(|c| c.step)
        .collect()
}

#[test]
fn a_latent_file_reproduces_the_pytorch_run_of_cache_dit() {
    let (entry, tensors) = trace("scenes_F1B0_R0.08");
    let noise = &tensors[entry["noise"].as_str().expect("noise")];
    let shape = noise.dims().to_vec();
    let values: Vec<f32> = noise
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("noise values");
    let torch_latents = &tensors[entry["f32"]["latents"].as_str().expect("latents")];
    let torch_image = image_from_tensor(torch_latents).expect("image").remove(0);
    let want_cached: Vec<usize> = entry["f32"]["cached_steps"]
        .as_array()
        .expect("cached steps")
        .iter()
        .map(|s| s.as_u64().expect("step") as usize)
        .collect();
    assert!(!want_cached.is_empty(), "the trace reuses steps");

    let tmp = tempfile::tempdir().expect("tmp");
    let npy = tmp.path().join("noise.npy");
    write_npy(&npy, &shape, &values);
    let st = tmp.path().join("noise.safetensors");
    candle_core::safetensors::save(&HashMap::from([("latents", noise.clone())]), &st)
        .expect("write");

    for latent in [npy, st] {
        let out = tmp.path().join(latent.extension().expect("ext"));
        let (outcome, errors, stats, files) = run(&workflow(&entry, &latent), &out);
        assert_eq!(outcome, RunOutcome::Completed, "{latent:?}: {errors:?}");
        let stats = stats.expect("sampler stats");
        assert_eq!(cached_steps(&stats), want_cached, "{latent:?}");
        assert_eq!(
            stats.latent_file.as_deref(),
            Some(latent.display().to_string().as_str())
        );
        assert!(stats.summary_text().contains("latent "), "{latent:?}");
        let image = read_png(&files[0]).expect("png");
        let worst = image
            .pixels
            .iter()
            .zip(&torch_image.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .expect("pixels");
        assert!(
            worst <= 1,
            "{latent:?}: the image differs from cache-dit's by {worst} levels"
        );
    }
}

#[test]
fn a_latent_that_does_not_fit_the_model_is_refused_before_the_run() {
    let (entry, _) = trace("scenes_F1B0_R0.08");
    let tmp = tempfile::tempdir().expect("tmp");
    // scenes-dit takes 3 channels; this latent has 4.
    let four = tmp.path().join("four.npy");
    write_npy(&four, &[1, 4, 32, 32], &vec![0.5; 4 * 32 * 32]);
    let missing = tmp.path().join("missing.npy");
    for (latent, says) in [(four, "takes 3"), (missing, "missing.npy")] {
        let out = tmp.path().join("out");
        let (outcome, errors, stats, files) = run(&workflow(&entry, &latent), &out);
        assert_eq!(outcome, RunOutcome::Failed);
        assert!(stats.is_none() && files.is_empty(), "nothing ran");
        let text = errors.join("; ");
        assert!(
            text.contains("latent_file") && text.contains(says) && text.contains("Sampler"),
            "{text}"
        );
    }
}
