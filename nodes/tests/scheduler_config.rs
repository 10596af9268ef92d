//! Scheduler configs against diffusers: every case of tools/make_scheduler_fixtures.py (a
//! scheduler class built from a scheduler_config.json, its timesteps, sigmas and a seeded
//! trajectory) reproduced by our schedulers; pipeline folders' configs picked up at load and
//! by the Sampler; every unimplemented value refused, naming the file, field and value.

mod common;

use cachedit_nodes::exec::{Event, ExecConfig, Executor, RunId, RunOutcome};
use cachedit_nodes::graph::document::{NodeId, PortRef, Value as Param, Workflow};
use cachedit_nodes::models::builtin::load_model;
use cachedit_nodes::registry::Registry;
use cachedit_nodes::schedulers::{Scheduler, SchedulerConfig, SchedulerConfigError, SchedulerKind};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Relative tolerance for sigmas and `init_noise_sigma`: the tables are built with torch's f32
/// roundings, so what is left is an f32 ulp or two (ln / exp / pow of other libms).
const SIGMA_TOL: f64 = 1e-6;
/// Relative tolerance for fractional (Euler) timesteps: f32 values that go through ln σ.
const FRACTIONAL_TIMESTEP_TOL: f64 = 1e-6;
/// Normalised max error (`max|ours − ref| / max|ref|`) of each step's output: diffusers does
/// its scalar math in f32 and DPM / Euler cast the sample to f32 inside `step`; ours is f64.
const STEP_TOL: f64 = 2e-6;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let json: Value = serde_json::from_str(&text).expect("cases.json parses");
    json["cases"].as_array().expect("cases").clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn label(case: &Value) -> String {
    format!(
        "{} / {} / {} steps",
        case["name"].as_str().expect("name"),
        case["class"].as_str().expect("class"),
        case["steps"]
    )
}

/// The config a case builds from: its text, or the file it names.
fn case_config(case: &Value) -> SchedulerConfig {
    match case["config_text"].as_str() {
        Some(text) => SchedulerConfig::parse(text, &label(case)).expect("config parses"),
        None => {
            let file = case["config_file"].as_str().expect("config_file");
            SchedulerConfig::read(&fixtures().join(file)).expect("config file reads")
        }
    }
}

fn case_kind(case: &Value) -> SchedulerKind {
    let kind = SchedulerKind::parse(case["kind"].as_str().expect("kind")).expect("known kind");
    assert_eq!(kind.class_name(), case["class"].as_str().expect("class"));
    kind
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).expect("tensor")
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// `max|a − b| / max|b|`.
fn norm_err(ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "length");
    let diff = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = theirs.iter().map(|b| b.abs()).fold(0.0, f64::max);
    diff / scale.max(1e-300)
}

/// Largest `|a − b| / |b|` (0 where both are 0), or why the lists cannot be compared.
fn rel_err(ours: &[f64], theirs: &[f64]) -> Result<f64, String> {
    if ours.len() != theirs.len() {
        return Err(format!("length {} vs {}", ours.len(), theirs.len()));
    }
    Ok(ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| if a == b { 0.0 } else { (a - b).abs() / b.abs() })
        .fold(0.0, f64::max))
}

/// The worst errors a case showed, per quantity.
#[derive(Debug, Default, Clone, Copy)]
struct Worst {
    fractional_timestep: f64,
    sigma: f64,
    step: f64,
}

fn within(what: &str, error: f64, tol: f64) -> Result<f64, String> {
    if error <= tol {
        Ok(error)
    } else {
        Err(format!("{what}: error {error:e} > {tol:e}"))
    }
}

/// What went wrong in one case, or its worst errors.
fn check_case(case: &Value) -> Result<Worst, String> {
    let kind = case_kind(case);
    let steps = case["steps"].as_u64().expect("steps") as usize;
    let mut sched = kind
        .build(steps, &case_config(case))
        .map_err(|e| format!("build: {e}"))?;
    let mut worst = Worst::default();
    let timesteps = floats(&case["timesteps"]);
    // Integer timesteps (DDIM, DPM-Solver, and Euler's "leading" / "trailing") exactly.
    if timesteps.iter().all(|t| t.fract() == 0.0) {
        if sched.timesteps() != timesteps.as_slice() {
            return Err(format!(
                "timesteps: ours {:?} vs diffusers {timesteps:?}",
                sched.timesteps()
            ));
        }
    } else {
        let e = rel_err(sched.timesteps(), &timesteps)?;
        worst.fractional_timestep = within("fractional timesteps", e, FRACTIONAL_TIMESTEP_TOL)?;
    }
    match case["sigmas"].as_array() {
        Some(_) => {
            let e = rel_err(sched.sigmas(), &floats(&case["sigmas"]))?;
            worst.sigma = within("sigmas", e, SIGMA_TOL)?;
        }
        None if sched.sigmas().is_empty() => {}
        None => return Err("sigmas where diffusers has none".into()),
    }
    let init = case["init_noise_sigma"].as_f64().expect("init");
    let e = rel_err(&[sched.init_noise_sigma()], &[init])?;
    worst.sigma = worst.sigma.max(within("init_noise_sigma", e, SIGMA_TOL)?);

    let shape: Vec<usize> = floats(&case["shape"]).iter().map(|&d| d as usize).collect();
    let noise = tensor(&floats(&case["noise"]), &shape);
    let mut x = (noise * sched.init_noise_sigma()).expect("scale");
    let outputs = case["outputs"].as_array().expect("outputs");
    for (i, reference) in outputs.iter().enumerate() {
        let scaled = sched.scale_model_input(&x, i).expect("scale_model_input");
        let e = norm_err(&values(&scaled), &floats(&case["scaled_inputs"][i]));
        worst.step = worst
            .step
            .max(within(&format!("scale_model_input {i}"), e, STEP_TOL)?);
        let model_output = tensor(&floats(&case["model_outputs"][i]), &shape);
        x = sched
            .step(&model_output, i, &x)
            .map_err(|e| format!("step {i}: {e}"))?;
        let e = norm_err(&values(&x), &floats(reference));
        worst.step = worst.step.max(within(&format!("step {i}"), e, STEP_TOL)?);
    }
    Ok(worst)
}

#[test]
fn every_fixture_case_matches_diffusers() {
    let cases = cases();
    assert!(cases.len() >= 90, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut worst = Worst::default();
    for case in &cases {
        match check_case(case) {
            Ok(w) => {
                worst.fractional_timestep = worst.fractional_timestep.max(w.fractional_timestep);
                worst.sigma = worst.sigma.max(w.sigma);
                worst.step = worst.step.max(w.step);
            }
            Err(why) => failures.push(format!("{}: {why}", label(case))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("worst errors over {} cases: {worst:?}", cases.len());
}

fn build(kind: SchedulerKind, steps: usize, config: &SchedulerConfig) -> Box<dyn Scheduler> {
    kind.build(steps, config).expect("scheduler builds")
}

fn parse(text: &str) -> SchedulerConfig {
    SchedulerConfig::parse(text, "test.json").expect("parses")
}

fn case<'a>(cases: &'a [Value], name: &str, class: &str, steps: u64) -> &'a Value {
    cases
        .iter()
        .find(|c| c["name"] == name && c["class"] == class && c["steps"] == steps)
        .unwrap_or_else(|| panic!("fixture case {name} / {class} / {steps}"))
}

#[test]
fn the_default_config_is_dits_and_builds_what_diffusers_builds_from_dits_file() {
    let cases = cases();
    for c in cases.iter().filter(|c| c["name"] == "dit_like") {
        let steps = c["steps"].as_u64().expect("steps") as usize;
        let kind = case_kind(c);
        let default = build(kind, steps, &SchedulerConfig::default());
        let from_file = build(kind, steps, &case_config(c));
        assert_eq!(default.timesteps(), from_file.timesteps(), "{}", label(c));
        assert_eq!(default.sigmas(), from_file.sigmas(), "{}", label(c));
        assert_eq!(default.init_noise_sigma(), from_file.init_noise_sigma());
        assert_eq!(default.timesteps(), floats(&c["timesteps"]).as_slice());
    }
    assert!(SchedulerConfig::default().source().is_none());
}

#[test]
fn steps_offset_and_trailing_spacing_change_the_timesteps_as_diffusers_does() {
    let cases = cases();
    let dit = build(SchedulerKind::Ddim, 10, &SchedulerConfig::default());
    let offset = build(
        SchedulerKind::Ddim,
        10,
        &parse(r#"{"steps_offset": 1, "clip_sample": false}"#),
    );
    let shifted: Vec<f64> = dit.timesteps().iter().map(|t| t + 1.0).collect();
    assert_eq!(offset.timesteps(), shifted.as_slice());
    let theirs = floats(&case(&cases, "ddim_steps_offset", "DDIMScheduler", 10)["timesteps"]);
    assert_eq!(offset.timesteps(), theirs.as_slice());

    let trailing = build(
        SchedulerKind::Ddim,
        10,
        &parse(r#"{"timestep_spacing": "trailing", "clip_sample": false}"#),
    );
    let theirs = floats(&case(&cases, "ddim_trailing", "DDIMScheduler", 10)["timesteps"]);
    assert_eq!(trailing.timesteps(), theirs.as_slice());
    assert_ne!(trailing.timesteps(), dit.timesteps());
    assert_eq!(
        trailing.timesteps()[0],
        999.0,
        "trailing starts at the last step"
    );
}

#[test]
fn a_fixed_timestep_rounding_tie_matches_numpy_at_26_dpm_steps() {
    // np.linspace(0, 999, 27) lands on x.5 ties that `start + (end − start)·i/(n − 1)`
    // rounds the other way (what this code did before the scheduler config).
    let cases = cases();
    let theirs = floats(&case(&cases, "dit_like", "DPMSolverMultistepScheduler", 26)["timesteps"]);
    let ours = build(
        SchedulerKind::DpmSolverMultistep,
        26,
        &SchedulerConfig::default(),
    );
    assert_eq!(ours.timesteps(), theirs.as_slice());
}

#[test]
fn fields_a_class_does_not_have_are_ignored() {
    // Euler / DPM refuse exponential sigmas; DDIM has no such field, as in from_config.
    let text = r#"{"use_exponential_sigmas": true, "clip_sample": false}"#;
    let config = parse(text);
    let ddim = build(SchedulerKind::Ddim, 7, &config);
    let dit = build(SchedulerKind::Ddim, 7, &SchedulerConfig::default());
    assert_eq!(ddim.timesteps(), dit.timesteps());
    assert!(SchedulerKind::Euler.build(7, &config).is_err());
    assert!(SchedulerKind::DpmSolverMultistep.build(7, &config).is_err());
}

fn pipeline() -> PathBuf {
    fixtures().join("pipeline")
}

#[test]
fn a_pipeline_folders_scheduler_config_is_loaded_with_the_model() {
    let cases = cases();
    let reference = case(&cases, "pipeline", "DPMSolverMultistepScheduler", 7);
    let theirs = floats(&reference["timesteps"]);
    let expected_source = pipeline().join("scheduler").join("scheduler_config.json");
    // The pipeline folder, and its transformer/ folder (whose sibling scheduler/ counts).
    for path in [pipeline(), pipeline().join("transformer")] {
        let model = load_model(path.to_str().expect("utf-8"), "f32", "cpu").expect("loads");
        let config = &model.scheduler_config;
        assert_eq!(config.source(), Some(expected_source.as_path()), "{path:?}");
        assert_eq!(config.class_name(), Some("DPMSolverMultistepScheduler"));
        let sched = build(SchedulerKind::DpmSolverMultistep, 7, config);
        assert_eq!(sched.timesteps(), theirs.as_slice(), "{path:?}");
    }
    // The same weights as a plain checkpoint have no scheduler config.
    let plain = fixtures().join("../dit_pixel");
    let model = load_model(plain.to_str().expect("utf-8"), "f32", "cpu").expect("loads");
    assert_eq!(model.scheduler_config, SchedulerConfig::default());
    let default = build(
        SchedulerKind::DpmSolverMultistep,
        7,
        &model.scheduler_config,
    );
    assert_ne!(default.timesteps(), theirs.as_slice());
}

fn spawn(out: &Path) -> Executor {
    Executor::spawn(
        Registry::builtin(),
        ExecConfig {
            output_dir: out.to_path_buf(),
        },
    )
    .expect("executor starts")
}

fn collect(exec: &Executor, run_id: RunId) -> Vec<Event> {
    common::collect_run(exec, run_id, Duration::from_secs(120))
}

fn sampler_workflow(model: &Path, steps: i64) -> Workflow {
    let mut wf = Workflow::default();
    let load = wf.add_node("LoadModel", [0.0, 0.0]);
    let sampler = wf.add_node("Sampler", [300.0, 0.0]);
    wf.set_param(load, "model", Param::Text(model.display().to_string()));
    wf.set_param(sampler, "steps", Param::Int(steps));
    wf.set_param(sampler, "scheduler", Param::Text("dpm++2m".into()));
    wf.connect(PortRef::new(load, "model"), PortRef::new(sampler, "model"));
    wf
}

#[test]
fn the_sampler_steps_through_the_pipelines_scheduler_config() {
    let cases = cases();
    let theirs = floats(&case(&cases, "pipeline", "DPMSolverMultistepScheduler", 7)["timesteps"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let exec = spawn(tmp.path());
    let events = collect(
        &exec,
        exec.run(sampler_workflow(&pipeline(), 7)).expect("run"),
    );
    let timesteps: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step { step, .. } => Some(step.timestep),
            _ => None,
        })
        .collect();
    assert_eq!(timesteps, theirs);
}

/// A pipeline folder in `dir` with the fixture's transformer and `scheduler_config` as its
/// scheduler config.
fn pipeline_with(dir: &Path, scheduler_config: &str) -> PathBuf {
    let root = dir.join("pipe");
    let transformer = root.join("transformer");
    std::fs::create_dir_all(&transformer).expect("mkdir");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(pipeline().join("transformer").join(f), transformer.join(f)).expect("copy");
    }
    std::fs::copy(
        pipeline().join("model_index.json"),
        root.join("model_index.json"),
    )
    .expect("copy");
    std::fs::create_dir_all(root.join("scheduler")).expect("mkdir");
    std::fs::write(
        root.join("scheduler").join("scheduler_config.json"),
        scheduler_config,
    )
    .expect("write");
    root
}

#[test]
fn a_bad_scheduler_config_fails_at_load_naming_the_file_and_the_field() {
    let tmp = tempfile::tempdir().expect("tmp");
    let text = r#"{"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": true}"#;
    let root = pipeline_with(tmp.path(), text);
    let file = root.join("scheduler").join("scheduler_config.json");
    let err = load_model(root.to_str().expect("utf-8"), "f32", "cpu").unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains("use_exponential_sigmas") && text.contains("true"),
        "{text}"
    );

    // Through the executor: the Load Model node fails with that message.
    let exec = spawn(&tmp.path().join("out"));
    let events = collect(&exec, exec.run(sampler_workflow(&root, 2)).expect("run"));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RunFinished {
            outcome: RunOutcome::Failed,
            ..
        }
    )));
    let load_error = events.iter().find_map(|e| match e {
        Event::NodeError {
            node: Some(NodeId(1)),
            message,
            ..
        } => Some(message.clone()),
        _ => None,
    });
    let message = load_error.expect("the Load Model node fails");
    assert!(message.contains("use_exponential_sigmas"), "{message}");
    assert!(message.contains("scheduler_config.json"), "{message}");
}

#[test]
fn a_scheduler_config_that_is_not_a_regular_file_or_too_large_is_refused_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("scheduler_config.json");
    std::fs::create_dir(&dir).expect("mkdir");
    let err = SchedulerConfig::read(&dir).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("regular"),
        "{err}"
    );

    let big = tmp.path().join("big.json");
    let padding = " ".repeat(2 << 20);
    std::fs::write(&big, format!("{{{padding}}}")).expect("write");
    let err = SchedulerConfig::read(&big).unwrap_err().to_string();
    assert!(err.contains("big.json") && err.contains("bytes"), "{err}");

    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"solver_order\": 2,").expect("write");
    let err = SchedulerConfig::read(&broken).unwrap_err().to_string();
    assert!(err.contains("broken.json"), "{err}");
}

/// Builds `kind` from `fields` (a JSON object's inside) and returns the error.
fn refusal(kind: SchedulerKind, fields: &str) -> SchedulerConfigError {
    let config = SchedulerConfig::parse(&format!("{{{fields}}}"), "dir/scheduler_config.json")
        .expect("parses");
    match kind.build(10, &config) {
        Ok(_) => panic!("{kind:?} accepted {fields}"),
        Err(e) => e,
    }
}

#[test]
fn each_unimplemented_value_is_refused_naming_the_file_the_field_and_the_value() {
    use SchedulerKind::{Ddim, DpmSolverMultistep as Dpm, Euler};
    let cases: &[(SchedulerKind, &str, &str, &str)] = &[
        (
            Dpm,
            r#""use_exponential_sigmas": true"#,
            "use_exponential_sigmas",
            "true",
        ),
        (Dpm, r#""use_beta_sigmas": true"#, "use_beta_sigmas", "true"),
        (Dpm, r#""use_lu_lambdas": true"#, "use_lu_lambdas", "true"),
        (Dpm, r#""use_flow_sigmas": true"#, "use_flow_sigmas", "true"),
        (Dpm, r#""thresholding": true"#, "thresholding", "true"),
        (
            Dpm,
            r#""algorithm_type": "sde-dpmsolver++""#,
            "algorithm_type",
            "\"sde-dpmsolver++\"",
        ),
        (
            Dpm,
            r#""prediction_type": "flow_prediction""#,
            "prediction_type",
            "\"flow_prediction\"",
        ),
        (Dpm, r#""solver_order": 4"#, "solver_order", "4"),
        (Dpm, r#""solver_type": "rk4""#, "solver_type", "\"rk4\""),
        (
            Dpm,
            r#""algorithm_type": "dpmsolver""#,
            "final_sigmas_type",
            "(absent)",
        ),
        (
            Dpm,
            r#""final_sigmas_type": "max""#,
            "final_sigmas_type",
            "\"max\"",
        ),
        (
            Dpm,
            r#""lambda_min_clipped": "low""#,
            "lambda_min_clipped",
            "\"low\"",
        ),
        (
            Euler,
            r#""use_exponential_sigmas": true"#,
            "use_exponential_sigmas",
            "true",
        ),
        (
            Euler,
            r#""use_beta_sigmas": true"#,
            "use_beta_sigmas",
            "true",
        ),
        (
            Euler,
            r#""interpolation_type": "cubic""#,
            "interpolation_type",
            "\"cubic\"",
        ),
        (
            Euler,
            r#""timestep_type": "fractional""#,
            "timestep_type",
            "\"fractional\"",
        ),
        (
            Euler,
            r#""prediction_type": "flow_prediction""#,
            "prediction_type",
            "\"flow_prediction\"",
        ),
        (Ddim, r#""thresholding": true"#, "thresholding", "true"),
        (
            Ddim,
            r#""timestep_spacing": "uniform""#,
            "timestep_spacing",
            "\"uniform\"",
        ),
        (Ddim, r#""clip_sample": "yes""#, "clip_sample", "\"yes\""),
        (
            Ddim,
            r#""beta_schedule": "sigmoid""#,
            "beta_schedule",
            "\"sigmoid\"",
        ),
        (
            Ddim,
            r#""num_train_timesteps": 1000.5"#,
            "num_train_timesteps",
            "1000.5",
        ),
        (
            Ddim,
            r#""trained_betas": [0.1, 0.2]"#,
            "trained_betas",
            "[0.1, 0.2]",
        ),
        (Euler, r#""steps_offset": -1"#, "steps_offset", "-1"),
        (
            Euler,
            r#""beta_start": NaN, "beta_schedule": "cosine""#,
            "beta_schedule",
            "\"cosine\"",
        ),
    ];
    for (kind, fields, field, value) in cases {
        let err = refusal(*kind, fields);
        let text = err.to_string();
        assert!(
            text.starts_with("dir/scheduler_config.json: "),
            "{kind:?} {fields}: {text}"
        );
        match &err {
            SchedulerConfigError::Field {
                field: f, value: v, ..
            } => {
                assert_eq!((f.as_str(), v.as_str()), (*field, *value), "{text}");
            }
            other => panic!("{fields}: not a field error: {other}"),
        }
        assert!(text.contains(field) && text.contains(value), "{text}");
    }
}

#[test]
fn more_ddim_steps_than_training_steps_are_refused_as_diffusers_does() {
    let config = parse(r#"{"num_train_timesteps": 100, "clip_sample": false}"#);
    let err = SchedulerKind::Ddim
        .build(101, &config)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("test.json"), "{err}");
    assert!(SchedulerKind::Ddim.build(100, &config).is_ok());
}
