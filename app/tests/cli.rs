//! The `cachedit` binary as a user runs it: run, restore from PNG, validate, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cachedit(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachedit"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cachedit runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a Load Model → Sampler workflow whose Load Model has `load_params` (a RON map body);
/// asserts that `cachedit run` fails and returns its stderr.
fn run_failing_workflow(load_params: &str) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let workflow = format!(
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {{{load_params}}}),
            (id: 2, kind: "Sampler"),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#
    );
    std::fs::write(tmp.path().join("wf.ron"), workflow).expect("write");
    let o = cachedit(&["run", "wf.ron", "--out", "o"], tmp.path());
    assert!(!o.status.success());
    text(&o.stderr)
}

#[test]
fn default_workflow_runs_writes_png_and_stats_and_the_png_runs_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let workflow = repo().join("workflows/default.ron");
    let out = tmp.path().join("out");
    let o = cachedit(
        &[
            "run",
            &workflow.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let png = out.join("default_00001.png");
    assert!(png.is_file(), "stdout: {}", text(&o.stdout));

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).expect("stats.json"))
            .expect("stats parse");
    assert_eq!(stats["outcome"], "completed");
    let nodes = stats["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    let sampler = nodes
        .iter()
        .find(|n| n["kind"] == "Sampler")
        .expect("sampler");
    assert_eq!(sampler["steps"].as_array().map(|s| s.len()), Some(25));
    assert!(sampler["ms"].as_f64().unwrap_or(0.0) > 0.0);

    // The PNG alone restores and re-runs the workflow, to the same pixels.
    let out2 = tmp.path().join("again");
    let o = cachedit(
        &[
            "run",
            "--from-png",
            &png.display().to_string(),
            "--out",
            &out2.display().to_string(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let a = std::fs::read(&png).expect("first");
    let b = std::fs::read(out2.join("default_00001.png")).expect("second");
    assert_eq!(a, b, "same workflow, same seed: same file");

    let restored = tmp.path().join("restored.ron");
    let o = cachedit(
        &[
            "restore",
            &png.display().to_string(),
            "-o",
            &restored.display().to_string(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let o = cachedit(&["validate", &restored.display().to_string()], tmp.path());
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
}

#[test]
fn malformed_file_is_a_one_line_error_with_line_and_column() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.ron");
    std::fs::write(&bad, "(\n    version: 1,\n    nodes: [(id: \"one\")],\n)\n").expect("write");
    let o = cachedit(&["validate", "bad.ron"], tmp.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.ron:3:"), "{err}");
}

#[test]
fn invalid_workflow_names_the_node_and_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let wf = tmp.path().join("wf.ron");
    std::fs::write(
        &wf,
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel"),
            (id: 2, kind: "Sampler", params: {"steps": 5000}),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#,
    )
    .expect("write");
    let o = cachedit(&["run", "wf.ron"], tmp.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("Sampler #2"), "{err}");
    assert!(err.contains("steps"), "{err}");
}

#[test]
fn a_failing_node_exits_non_zero_naming_it() {
    let err = run_failing_workflow(r#""model": "./missing-checkpoint""#);
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("LoadModel #1"), "{err}");
    assert!(err.contains("missing-checkpoint"), "{err}");
}

#[test]
fn cuda_in_a_cpu_build_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let err = run_failing_workflow(r#""device": "cuda:0""#);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn a_cached_run_prints_detailed_stats_and_writes_them_to_stats_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let workflow = repo().join("workflows/cache_fixed.ron");
    let o = cachedit(
        &["run", &workflow.display().to_string(), "--out", "o"],
        tmp.path(),
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("DetailedStats #5"), "{out}");
    assert!(out.contains("Fixed_F4B0_W4K2_N0.001"), "{out}");
    assert!(out.contains("blocks run 220 of 300"), "{out}");
    assert!(out.contains("measured"), "{out}");
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("o/stats.json")).expect("stats.json"),
    )
    .expect("stats parse");
    let nodes = stats["nodes"].as_array().expect("nodes");
    let sampler = nodes
        .iter()
        .find(|n| n["kind"] == "Sampler")
        .expect("sampler");
    let s = &sampler["stats"];
    assert_eq!(s["calls"].as_array().map(Vec::len), Some(25));
    assert_eq!(s["block_evaluations"], 220);
    let summary = &s["summary"];
    assert_eq!(summary["signature"], "Fixed_F4B0_W4K2_N0.001");
    assert_eq!(summary["block_evaluations_uncached"], 300);
    assert_eq!(
        summary["branches"][0]["cached_steps"]
            .as_array()
            .map(Vec::len),
        Some(10)
    );
    assert!(s["measured"]["speedup"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(s["measured"]["rounds"], 3);
    assert!(["ok", "at_ideal", "noisy"].contains(&s["measured"]["verdict"].as_str().unwrap_or("")));
    assert!(
        out.contains("over 3 rounds"),
        "the spread is printed: {out}"
    );
    let detailed = nodes
        .iter()
        .find(|n| n["kind"] == "DetailedStats")
        .expect("detailed stats");
    assert!(detailed["summary"]
        .as_str()
        .is_some_and(|t| t.contains("hit rate")));
    assert!(tmp
        .path()
        .join("o/cached_Fixed_F4B0_W4K2_N0.001_00001.png")
        .is_file());
}

#[test]
fn bench_cache_writes_its_section_and_keeps_the_others() {
    let tmp = tempfile::tempdir().expect("tmp");
    let md = tmp.path().join("B.md");
    std::fs::write(
        &md,
        "# Benchmarks\n<!-- bench:dit-forward:start -->\nkept\n<!-- bench:dit-forward:end -->\n",
    )
    .expect("write");
    let o = cachedit(
        &[
            "bench-cache",
            "--model",
            "random-tiny",
            "--steps",
            "4",
            "--images",
            "1",
            "--repeats",
            "1",
            "--write",
            "B.md",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let written = std::fs::read_to_string(&md).expect("read");
    assert!(
        written.contains("<!-- bench:dit-forward:start -->\nkept\n"),
        "{written}"
    );
    assert!(
        written.contains("<!-- bench:step-cache:start -->"),
        "{written}"
    );
    for config in [
        "uncached",
        "fixed(2)",
        "dynamic",
        "adaptive F4B0 R0.12 W4",
        "TaylorSeer O1",
        "SCM medium dynamic",
    ] {
        assert!(written.contains(config), "{config}: {written}");
    }
    assert!(written.contains("relative-L1 indicator"), "{written}");
}

#[test]
fn validate_checks_model_files_class_labels_prefixes_and_latents() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The built-in model has 10 classes; the prefix is a path; the latent does not exist.
    std::fs::write(
        tmp.path().join("wf.ron"),
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {"model": "scenes-dit"}),
            (id: 2, kind: "Sampler", params: {"class_label": 12, "latent_file": "nowhere.npy"}),
            (id: 3, kind: "SaveImage", params: {"filename_prefix": "../escape"}),
        ], links: [
            (from: (node: 1, port: "model"), to: (node: 2, port: "model")),
            (from: (node: 2, port: "image"), to: (node: 3, port: "image")),
        ])"#,
    )
    .expect("write");
    let o = cachedit(&["validate", "wf.ron"], tmp.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for says in [
        "Sampler #2: param `class_label`: class 12 is out of range: the model has classes 0..9",
        "Sampler #2: param `latent_file`: nowhere.npy",
        "SaveImage #3: param `filename_prefix`",
    ] {
        assert!(err.contains(says), "{says:?} not in {err}");
    }
    assert!(
        !tmp.path().join("out").exists(),
        "validate creates no folder"
    );

    // A model path that does not exist is named with the node and the field.
    std::fs::write(
        tmp.path().join("missing.ron"),
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {"model": "./no/such/checkpoint"}),
            (id: 2, kind: "Sampler", params: {"class_label": 900}),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#,
    )
    .expect("write");
    let o = cachedit(&["validate", "missing.ron"], tmp.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("LoadModel #1: param `model`") && err.contains("no/such/checkpoint"),
        "{err}"
    );
    // With the model unknown, its class count is too: no guess about the class label.
    assert!(!err.contains("class_label"), "{err}");

    // The example workflows pass.
    let o = cachedit(
        &[
            "validate",
            &repo().join("workflows/default.ron").display().to_string(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn run_checks_the_output_folder_before_sampling() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A file where the output folder should be: nothing can be written under it.
    std::fs::write(tmp.path().join("taken"), b"a file").expect("write");
    let workflow = repo().join("workflows/default.ron");
    let started = std::time::Instant::now();
    let o = cachedit(
        &["run", &workflow.display().to_string(), "--out", "taken/out"],
        tmp.path(),
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("taken/out"), "{err}");
    assert!(
        !text(&o.stdout).contains("Sampler"),
        "no sampling before the check: {}",
        text(&o.stdout)
    );
    assert!(started.elapsed().as_secs() < 30);
}

/// A checkpoint folder: the pixel fixture's config and a `.bin` whose pickle rebuilds a tensor
/// from two arguments (candle's reader panicked on it, and the CLI said only "executor
/// stopped unexpectedly").
fn malformed_bin_checkpoint(dir: &Path) -> PathBuf {
    use std::io::Write;
    let fixtures = repo().join("nodes/tests/fixtures");
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).expect("mkdir");
    std::fs::copy(
        fixtures.join("dit_pixel_bin/config.json"),
        ckpt.join("config.json"),
    )
    .expect("config");
    let mut pickle = vec![0x80, 2, b'}', b'('];
    pickle.extend_from_slice(b"X\x15\x00\x00\x00pos_embed.proj.weight");
    pickle.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    pickle.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
    pickle.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuM\x00\x06tQK\x00tRu.");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).expect("start");
    zip.write_all(&pickle).expect("write");
    zip.start_file("archive/data/0", options).expect("start");
    zip.write_all(&[0u8; 6144]).expect("write");
    let bytes = zip.finish().expect("finish").into_inner();
    std::fs::write(ckpt.join("diffusion_pytorch_model.bin"), bytes).expect("bin");
    ckpt
}

#[test]
fn a_malformed_bin_checkpoint_is_one_error_line_naming_the_node_and_file_even_with_backtraces_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ckpt = malformed_bin_checkpoint(tmp.path());
    let workflow = format!(
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {{"model": "{}"}}),
            (id: 2, kind: "Sampler", params: {{"steps": 2, "class_label": 1}}),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#,
        ckpt.display()
    );
    std::fs::write(tmp.path().join("wf.ron"), workflow).expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_cachedit"))
        .args(["run", "wf.ron", "--out", "o"])
        .current_dir(tmp.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("runs");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace: {err}");
    for says in [
        "LoadModel #1",
        "diffusion_pytorch_model.bin",
        "_rebuild_tensor_v2 with 2 arguments",
    ] {
        assert!(err.contains(says), "{says:?} not in {err}");
    }
    assert!(!err.contains("executor stopped"), "{err}");
}

#[cfg(unix)]
#[test]
fn validate_and_restore_refuse_a_fifo_instead_of_blocking() {
    let tmp = tempfile::tempdir().expect("tmp");
    for name in ["wf.ron", "image.png"] {
        let made = Command::new("mkfifo")
            .arg(tmp.path().join(name))
            .status()
            .expect("mkfifo");
        assert!(made.success());
    }
    let started = std::time::Instant::now();
    for args in [
        &["validate", "wf.ron"][..],
        &["restore", "image.png", "-o", "back.ron"][..],
    ] {
        let o = cachedit(args, tmp.path());
        assert!(!o.status.success(), "{args:?}");
        let err = text(&o.stderr);
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
    // Both return at once; a blocking open would hang here until the test harness gave up.
    assert!(started.elapsed().as_secs() < 60);
}

#[cfg(unix)]
#[test]
fn stats_json_replaces_a_planted_symlink_instead_of_writing_through_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).expect("mkdir");
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "keep me").expect("victim");
    std::os::unix::fs::symlink(&victim, out.join("stats.json")).expect("symlink");
    std::fs::write(
        tmp.path().join("wf.ron"),
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {"model": "random-tiny"}),
            (id: 2, kind: "Sampler", params: {"steps": 2, "class_label": 1}),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#,
    )
    .expect("write");
    let o = cachedit(&["run", "wf.ron", "--out", "o"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    let stats = out.join("stats.json");
    assert!(!stats.symlink_metadata().expect("stats").is_symlink());
    assert!(std::fs::read_to_string(&stats)
        .expect("stats")
        .contains("Sampler"));
}

#[test]
fn a_compare_workflow_prints_the_table_and_writes_it_as_csv_json_and_a_grid() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("cmp.ron"),
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {"model": "random-tiny"}),
            (id: 2, kind: "CacheDitAdvancedConfig", params: {"strategy": "fixed", "warmup": 1}),
            (id: 3, kind: "CacheDitAdvancedConfig", params: {"strategy": "adaptive", "warmup": 1}),
            (id: 4, kind: "Compare", params: {"seeds": "1, 2", "classes": "0", "steps": 4}),
            (id: 5, kind: "SaveImage", params: {"filename_prefix": "grid"}),
        ], links: [
            (from: (node: 1, port: "model"), to: (node: 4, port: "model")),
            (from: (node: 2, port: "cache"), to: (node: 4, port: "cache_1")),
            (from: (node: 3, port: "cache"), to: (node: 4, port: "cache_2")),
            (from: (node: 4, port: "grid"), to: (node: 5, port: "image")),
        ])"#,
    )
    .expect("write");
    let o = cachedit(&["run", "cmp.ron", "--out", "o"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("Compare #4:"), "{stdout}");
    for row in [
        "reference  NoCache",
        "1          Fixed_",
        "2          DBCache_",
    ] {
        assert!(stdout.contains(row), "{row:?} not in {stdout}");
    }
    let csv = std::fs::read_to_string(tmp.path().join("o/compare_4.csv")).expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header + reference + 2 configs: {csv}");
    assert!(lines[0].starts_with("cell,signature,runs,wall_ms"));
    // Two samples, one round: each row timed two runs.
    assert!(lines[1].starts_with("reference,NoCache,2,"), "{}", lines[1]);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("o/compare_4.json")).expect("json"),
    )
    .expect("json parses");
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("o/stats.json")).expect("stats"),
    )
    .expect("stats parses");
    let node = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["kind"] == "Compare")
        .expect("the Compare node is in stats.json");
    assert_eq!(node["comparison"], json, "stats.json holds the same table");
    assert_eq!(json[2]["hit_rate"].as_f64().map(|h| h >= 0.0), Some(true));
    let grid = tmp.path().join("o/grid_00001.png");
    assert!(grid.is_file(), "{stdout}");
}

#[test]
fn a_sweep_compares_every_combination_of_its_axes_against_one_reference() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("sweep.ron"),
        r#"(version: 1, nodes: [
            (id: 1, kind: "LoadModel", params: {"model": "random-tiny"}),
            (id: 2, kind: "Sweep", params: {"axis_1": "residual_diff_threshold", "values_1": "0.05, 0.9",
                "axis_2": "Fn_compute_blocks", "values_2": "1, 2", "seeds": "3", "classes": "0", "steps": 5, "warmup": 1}),
        ], links: [(from: (node: 1, port: "model"), to: (node: 2, port: "model"))])"#,
    )
    .expect("write");
    let o = cachedit(&["run", "sweep.ron", "--out", "o"], tmp.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let csv = std::fs::read_to_string(tmp.path().join("o/compare_2.csv")).expect("csv");
    let signatures: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(signatures.len(), 5, "reference + 2 × 2: {csv}");
    assert_eq!(signatures[0], "NoCache");
    for (row, (fn_blocks, threshold)) in [(1, "0.05"), (2, "0.05"), (1, "0.9"), (2, "0.9")]
        .iter()
        .enumerate()
    {
        let sig = signatures[row + 1];
        assert!(
            sig.contains(&format!("F{fn_blocks}B0")) && sig.contains(&format!("_R{threshold}")),
            "row {}: {sig}",
            row + 1
        );
    }
    // One reference run for the one sample, however many cells.
    assert!(
        csv.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("reference,NoCache,1,")),
        "{csv}"
    );
}

#[test]
fn the_dit_pipeline_example_renders_rgb_through_its_vae_with_the_step_cache() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    // The example names its pipeline folder relative to the repository root, where it is run.
    let o = cachedit(
        &[
            "run",
            "workflows/dit_pipeline.ron",
            "--out",
            &out.display().to_string(),
        ],
        &repo(),
    );
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("LoadModel #1: DiT: 3 × transformer_blocks")
            && stderr.contains("VAE: 4 latent channels")
            && stderr.contains("of weights"),
        "Load Model says what it loaded: {stderr}"
    );
    let png = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .expect("a PNG");
    let image = cachedit_nodes::image::png_io::read_png(&png).expect("png");
    // 8×8 latents through a ×2 VAE: 16×16 RGB, not the ×8 false-colour latent preview.
    assert_eq!((image.width, image.height), (16, 16));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).expect("stats"))
            .expect("stats parse");
    let sampler = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["kind"] == "Sampler")
        .expect("sampler");
    assert_eq!(sampler["steps"].as_array().map(|s| s.len()), Some(12));
    let load = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["kind"] == "LoadModel")
        .expect("load model");
    assert!(
        load["info"]
            .as_str()
            .is_some_and(|i| i.contains("VAE: 4 latent channels")),
        "stats.json keeps what Load Model loaded: {load}"
    );
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("DBCache_F1B0") || stderr.contains("DBCache_F1B0"),
        "the cached run's table: {stdout}"
    );
}

#[test]
fn the_flux_examples_render_the_prompt_through_clip_t5_and_the_vae() {
    for (workflow, cached) in [
        ("workflows/flux_uncached.ron", false),
        ("workflows/flux_cached.ron", true),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("out");
        let o = cachedit(
            &["run", workflow, "--out", &out.display().to_string()],
            &repo(),
        );
        let stderr = text(&o.stderr);
        assert!(o.status.success(), "{workflow}: {stderr}");
        assert!(
            stderr.contains(
                "LoadModel #1: FLUX.1-dev: 2 × transformer_blocks + 2 × single_transformer_blocks"
            ) && stderr.contains("VAE: 16 latent channels"),
            "Load Model says what it loaded: {stderr}"
        );
        let png = std::fs::read_dir(&out)
            .expect("out")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .expect("a PNG");
        let image = cachedit_nodes::image::png_io::read_png(&png).expect("png");
        // 16 px asked: an 8×8 latent through the ×2 fixture VAE.
        assert_eq!((image.width, image.height), (16, 16));
        let chunks = cachedit_nodes::image::png_io::read_png_text(&png).expect("text");
        assert!(
            chunks
                .iter()
                .any(|(k, v)| k == "cachedit:prompt" && v == "a red fox in the snow"),
            "the prompt is in the PNG: {chunks:?}"
        );
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).expect("stats"))
                .expect("stats parse");
        let sampler = stats["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["kind"] == "Sampler")
            .expect("sampler");
        let run = &sampler["stats"];
        assert_eq!(run["prompt"], "a red fox in the snow", "{sampler}");
        assert_eq!(run["scheduler"], "flow-euler", "auto: the pipeline's class");
        let reused = run["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .filter(|c| c["decision"] == "Reused")
            .count();
        assert_eq!(reused > 0, cached, "{workflow}: {reused} reused calls");
    }
}

#[test]
fn every_caching_method_runs_on_flux_from_a_workflow_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let o = cachedit(
        &[
            "run",
            "workflows/flux_methods.ron",
            "--out",
            &out.display().to_string(),
        ],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).expect("stats"))
            .expect("stats parse");
    let samplers: Vec<&serde_json::Value> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["kind"] == "Sampler")
        .collect();
    assert_eq!(samplers.len(), 8);
    let mut reusing = Vec::new();
    for s in samplers {
        let run = &s["stats"];
        let signature = run["summary"]["signature"].as_str().expect("signature");
        let calls = run["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 12, "{signature}: one call per step");
        if calls.iter().any(|c| c["decision"] == "Reused") {
            reusing.push(signature.to_string());
        }
    }
    // The example's settings reuse some of the 12 steps with every method.
    assert_eq!(reusing.len(), 8, "{reusing:?}");
}

#[test]
fn calibrate_teacache_fits_a_quartic_from_uncached_runs_on_dit_and_flux() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dit = tmp.path().join("dit.json");
    let o = cachedit(
        &[
            "calibrate-teacache",
            "--steps",
            "8",
            "--seeds",
            "1",
            "--classes",
            "0,1",
            "--out",
            &dit.display().to_string(),
        ],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("coefficients"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dit).expect("json")).expect("parses");
    assert_eq!(doc["coefficients"].as_array().map(Vec::len), Some(5));
    // Batched CFG: one branch, a pair per call after the first, per run.
    assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(2 * 7));
    let flux = tmp.path().join("flux.json");
    let o = cachedit(
        &[
            "calibrate-teacache",
            "--model",
            "nodes/tests/fixtures/flux_pipeline",
            "--prompt",
            "a red fox in the snow",
            "--prompt",
            "a boat on a lake",
            "--steps",
            "6",
            "--seeds",
            "1",
            "--max-sequence-length",
            "16",
            "--width",
            "16",
            "--height",
            "16",
            "--out",
            &flux.display().to_string(),
        ],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&flux).expect("json")).expect("parses");
    assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(2 * 5));
    let o = cachedit(
        &[
            "calibrate-teacache",
            "--model",
            "nodes/tests/fixtures/flux_pipeline",
        ],
        &repo(),
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--prompt"), "{}", text(&o.stderr));
}
