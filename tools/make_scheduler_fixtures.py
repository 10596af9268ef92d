"""Generate scheduler fixtures: diffusers' DDIM, DPM-Solver multistep and Euler schedulers
built from a matrix of scheduler configs, for the Rust schedulers to reproduce.

What it makes (everything under ``nodes/tests/fixtures/schedulers/``, overwritten on every run):

* ``cases.json``   one entry per (config, scheduler class, step count): the text of the
                   ``scheduler_config.json`` (as diffusers writes it, or hand-written like a
                   hub file), the class built from it with ``Class.from_config(json.loads(text))``
                   (as a pipeline swaps schedulers), and what that scheduler gives after
                   ``set_timesteps(steps)``: timesteps, sigmas, ``init_noise_sigma``, and a short
                   trajectory: seeded float64 noise scaled by ``init_noise_sigma``, one seeded
                   float64 "model output" per step fed to ``step``, and every
                   ``scale_model_input`` and ``step`` result.
* ``pipeline/``    a tiny diffusers pipeline folder: ``model_index.json``, ``transformer/``
                   (a byte copy of ``nodes/tests/fixtures/dit_pixel``) and
                   ``scheduler/scheduler_config.json`` written by diffusers' ``save_config``
                   (it holds ``"lambda_min_clipped": -Infinity``, Python's non-strict JSON).
* ``README.md``    the list of files and cases (generated from what was written).

The scheduler math runs in float64 tensors on the CPU (diffusers keeps its sigma/alpha tables
in float32 and upcasts/downcasts as it does in a pipeline); seeds are fixed, so running it
twice gives byte-identical files. DPM-Solver and Euler get ``set_begin_index(0)`` so that the
step index is the loop index (diffusers would otherwise look the first timestep up and start
at its second occurrence when it repeats).

How to run (from the repository root; same environment as tools/make_fixtures.py)::

    python -m venv /work/.venv-fixtures
    /work/.venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    /work/.venv-fixtures/bin/python tools/make_scheduler_fixtures.py

No network access is needed. ``dit_pixel`` must exist (tools/make_fixtures.py makes it).
"""

from __future__ import annotations

import json
import warnings
import math
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

import diffusers
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils import logging as diffusers_logging

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
OUT = FIXTURES / "schedulers"

DDIM, DPM, EULER = DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
# The Sampler's `scheduler` param value for each class.
KIND = {DDIM: "ddim", DPM: "dpm++2m", EULER: "euler"}

# Batch 2, 3 channels (DPM's learned variance keeps channels [:3]), 2×2.
SAMPLE_SHAPE = (2, 3, 2, 2)

# 100 trained betas (num_train_timesteps must agree), quadratic from 1e-4 to 0.05.
TRAINED_100 = [round(1e-4 + (0.05 - 1e-4) * (i / 99) ** 2, 8) for i in range(100)]

# Modelled on DiT's hub scheduler config (a DDIMScheduler file of diffusers 0.12).
DIT_LIKE = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.12.0.dev0",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "trained_betas": None,
}

SD_LIKE = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
ZERO_SNR_V = dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
NOISE_PRED = dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min")


def saved(cls, **overrides):
    """The config text diffusers writes for ``cls(**overrides)`` (``save_config``'s text)."""
    return ("saved", cls, overrides)


def written(fields):
    """A hand-written config file (only the given fields, like older hub files)."""
    return ("written", None, fields)


# (name, config, {target class: step counts})
MATRIX = [
    ("dit_like", written(DIT_LIKE), {DDIM: [1, 7, 25], DPM: [1, 7, 25, 26], EULER: [1, 7, 25]}),
    # DDIM's own defaults: clip_sample on, "leading"; DPM / Euler take "leading" from it.
    ("ddim_defaults", saved(DDIM), {DDIM: [10], DPM: [10], EULER: [7]}),
    ("ddim_linspace", saved(DDIM, timestep_spacing="linspace", clip_sample=False), {DDIM: [1, 7, 26]}),
    ("ddim_trailing", saved(DDIM, timestep_spacing="trailing", clip_sample=False), {DDIM: [1, 7, 10]}),
    ("ddim_steps_offset", saved(DDIM, steps_offset=1, clip_sample=False), {DDIM: [7, 10]}),
    (
        "sd_like",
        saved(DDIM, **SD_LIKE, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        {DDIM: [10], DPM: [10], EULER: [10]},
    ),
    ("ddim_cosine", saved(DDIM, beta_schedule="squaredcos_cap_v2", clip_sample=False), {DDIM: [10]}),
    (
        "ddim_trained_betas",
        saved(DDIM, num_train_timesteps=100, trained_betas=TRAINED_100, clip_sample=False),
        {DDIM: [1, 9]},
    ),
    ("ddim_zero_snr_v", saved(DDIM, **ZERO_SNR_V, clip_sample=False), {DDIM: [1, 10]}),
    ("ddim_sample_clip", saved(DDIM, prediction_type="sample", clip_sample_range=2.0), {DDIM: [10]}),
    (
        "ddim_no_alpha_one",
        saved(DDIM, set_alpha_to_one=False, clip_sample=False, num_train_timesteps=500, beta_end=0.03),
        {DDIM: [7]},
    ),
    ("dpm_defaults", saved(DPM), {DPM: [1, 2, 7, 10, 26]}),
    ("dpm_order1", saved(DPM, solver_order=1), {DPM: [7]}),
    ("dpm_order3", saved(DPM, solver_order=3), {DPM: [1, 2, 3, 7, 20]}),
    ("dpm_order3_no_lower_final", saved(DPM, solver_order=3, lower_order_final=False), {DPM: [10]}),
    ("dpm_order3_sigma_min", saved(DPM, solver_order=3, final_sigmas_type="sigma_min"), {DPM: [7, 20]}),
    ("dpm_heun", saved(DPM, solver_type="heun"), {DPM: [10]}),
    ("dpm_heun_sigma_min", saved(DPM, solver_type="heun", final_sigmas_type="sigma_min"), {DPM: [20]}),
    ("dpm_karras", saved(DPM, use_karras_sigmas=True), {DPM: [1, 7, 20]}),
    ("dpm_karras_cosine", saved(DPM, use_karras_sigmas=True, beta_schedule="squaredcos_cap_v2"), {DPM: [10]}),
    ("dpm_sigma_min", saved(DPM, final_sigmas_type="sigma_min"), {DPM: [7, 20]}),
    ("dpm_euler_at_final", saved(DPM, final_sigmas_type="sigma_min", euler_at_final=True), {DPM: [20]}),
    ("dpm_noise_prediction", saved(DPM, **NOISE_PRED), {DPM: [10]}),
    ("dpm_noise_prediction_heun", saved(DPM, **NOISE_PRED, solver_type="heun"), {DPM: [10]}),
    ("dpm_noise_prediction_order3", saved(DPM, **NOISE_PRED, solver_order=3), {DPM: [10]}),
    ("dpm_noise_prediction_v", saved(DPM, **NOISE_PRED, prediction_type="v_prediction"), {DPM: [7]}),
    ("dpm_noise_prediction_sample", saved(DPM, **NOISE_PRED, prediction_type="sample"), {DPM: [7]}),
    ("dpm_v", saved(DPM, prediction_type="v_prediction"), {DPM: [10]}),
    ("dpm_sample", saved(DPM, prediction_type="sample"), {DPM: [10]}),
    ("dpm_leading_offset", saved(DPM, timestep_spacing="leading", steps_offset=1), {DPM: [7, 10]}),
    ("dpm_trailing", saved(DPM, timestep_spacing="trailing"), {DPM: [1, 7, 10]}),
    ("dpm_lambda_min_clipped", saved(DPM, lambda_min_clipped=-3.0), {DPM: [10]}),
    ("dpm_lambda_min_clipped_trailing", saved(DPM, lambda_min_clipped=-3.0, timestep_spacing="trailing"), {DPM: [7]}),
    ("dpm_learned_range", saved(DPM, variance_type="learned_range"), {DPM: [7]}),
    ("dpm_zero_snr_v", saved(DPM, **ZERO_SNR_V), {DPM: [10]}),
    ("dpm_scaled_linear", saved(DPM, **SD_LIKE), {DPM: [10]}),
    ("dpm_trained_betas", saved(DPM, num_train_timesteps=100, trained_betas=TRAINED_100), {DPM: [9]}),
    # diffusers maps "deis" to dpmsolver++ and "bh2" to midpoint (a file can still say so).
    ("dpm_deis_bh2", written({"algorithm_type": "deis", "solver_type": "bh2", "final_sigmas_type": "sigma_min"}), {DPM: [7]}),
    # Keys listed in _use_default_values are dropped by from_config.
    (
        "use_default_values",
        written({"timestep_spacing": "trailing", "solver_order": 3, "_use_default_values": ["timestep_spacing"]}),
        {DPM: [7]},
    ),
    ("euler_defaults", saved(EULER), {EULER: [1, 7, 10, 26]}),
    ("euler_leading_offset", saved(EULER, timestep_spacing="leading", steps_offset=1), {EULER: [7]}),
    ("euler_trailing", saved(EULER, timestep_spacing="trailing"), {EULER: [1, 10]}),
    ("euler_karras", saved(EULER, use_karras_sigmas=True), {EULER: [1, 10], DPM: [10]}),
    # DPM's Karras conversion also reads sigma_min / sigma_max, which from_config keeps.
    ("euler_karras_range", saved(EULER, use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0), {EULER: [10], DPM: [10]}),
    ("euler_log_linear", saved(EULER, interpolation_type="log_linear"), {EULER: [7]}),
    ("euler_log_linear_karras", saved(EULER, interpolation_type="log_linear", use_karras_sigmas=True), {EULER: [7]}),
    ("euler_sigma_min", saved(EULER, final_sigmas_type="sigma_min"), {EULER: [10]}),
    ("euler_v", saved(EULER, prediction_type="v_prediction"), {EULER: [10]}),
    ("euler_v_continuous", saved(EULER, prediction_type="v_prediction", timestep_type="continuous"), {EULER: [10]}),
    ("euler_sample", saved(EULER, prediction_type="sample"), {EULER: [7]}),
    ("euler_original_sample", written({"prediction_type": "original_sample"}), {EULER: [7]}),
    ("euler_zero_snr_v", saved(EULER, **ZERO_SNR_V), {EULER: [10]}),
    ("euler_scaled_linear", saved(EULER, **SD_LIKE), {EULER: [10]}),
    ("euler_cosine", saved(EULER, beta_schedule="squaredcos_cap_v2"), {EULER: [10]}),
    ("euler_trained_betas", saved(EULER, num_train_timesteps=100, trained_betas=TRAINED_100), {EULER: [9]}),
]

# The pipeline fixture's scheduler (written by save_config) and the steps it is checked at.
PIPELINE_SCHEDULER = dict(timestep_spacing="trailing", solver_order=3)
PIPELINE_STEPS = [7]


def setup_determinism() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    diffusers_logging.set_verbosity_error()
    # "algorithm_type dpmsolver is deprecated": the fixtures cover it while diffusers has it.
    warnings.filterwarnings("ignore", category=FutureWarning)


def config_text(config) -> str:
    how, cls, fields = config
    if how == "saved":
        return cls(**fields).to_json_string()
    return json.dumps(fields, indent=2, sort_keys=True) + "\n"


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def numbers(t: torch.Tensor) -> list:
    """A tensor's values as exact Python numbers (ints stay ints; floats are exact doubles)."""
    values = t.detach().cpu().reshape(-1).tolist()
    for v in values:
        assert not isinstance(v, float) or math.isfinite(v), "non-finite value"
    return values


@torch.no_grad()
def run_case(name: str, text: str, cls, steps: int) -> dict:
    scheduler = cls.from_config(json.loads(text))
    scheduler.set_timesteps(steps)
    if cls is not DDIM:
        scheduler.set_begin_index(0)
    timesteps = scheduler.timesteps
    gen = torch.Generator().manual_seed(seed_of(f"{name}/{cls.__name__}/{steps}"))
    noise = torch.randn(SAMPLE_SHAPE, generator=gen, dtype=torch.float64)
    init = float(scheduler.init_noise_sigma)
    sample = noise * init
    model_outputs, scaled, outputs = [], [], []
    for i, t in enumerate(timesteps):
        model_output = torch.randn(SAMPLE_SHAPE, generator=gen, dtype=torch.float64)
        scaled.append(numbers(scheduler.scale_model_input(sample, t)))
        sample = scheduler.step(model_output, t, sample).prev_sample
        assert sample.dtype == torch.float64
        if cls is not DDIM:
            assert scheduler.step_index == i + 1
        model_outputs.append(numbers(model_output))
        outputs.append(numbers(sample))
    sigmas = getattr(scheduler, "sigmas", None)
    return {
        "name": name,
        "class": cls.__name__,
        "kind": KIND[cls],
        "steps": steps,
        "timesteps": numbers(timesteps),
        "sigmas": numbers(sigmas) if cls is not DDIM else None,
        "init_noise_sigma": init,
        "shape": list(SAMPLE_SHAPE),
        "noise": numbers(noise),
        "model_outputs": model_outputs,
        "scaled_inputs": scaled,
        "outputs": outputs,
    }


def write_pipeline() -> str:
    """The tiny pipeline folder; returns its scheduler config's text."""
    pipe = OUT / "pipeline"
    if pipe.exists():
        shutil.rmtree(pipe)
    (pipe / "transformer").mkdir(parents=True)
    source = FIXTURES / "dit_pixel"
    for f in sorted(source.iterdir()):
        shutil.copyfile(f, pipe / "transformer" / f.name)
    DPM(**PIPELINE_SCHEDULER).save_config(pipe / "scheduler")
    model_index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "transformer": ["diffusers", "DiTTransformer2DModel"],
    }
    (pipe / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")
    text = (pipe / "scheduler" / "scheduler_config.json").read_text()
    assert "-Infinity" in text, "expected diffusers to write lambda_min_clipped as -Infinity"
    return text


def non_default_fields(text: str, cls) -> dict:
    """The fields of a config that differ from the target class's defaults (for the README)."""
    fields = json.loads(text)
    defaults = cls().config
    out = {}
    for k, v in sorted(fields.items()):
        if k.startswith("_") or k not in defaults:
            continue
        if defaults[k] != v and not (isinstance(v, float) and isinstance(defaults[k], float) and math.isnan(v)):
            out[k] = v if k != "trained_betas" else f"[{len(v)} betas]"
    return out


def write_readme(cases: list[dict], texts: dict[str, str], versions: str) -> None:
    lines = [
        "# Scheduler fixtures",
        "",
        "Generated by `tools/make_scheduler_fixtures.py` from diffusers' own schedulers; do not edit",
        "by hand. Regenerate with",
        "",
        "    /work/.venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt",
        "    /work/.venv-fixtures/bin/python tools/make_scheduler_fixtures.py",
        "",
        f"Versions: {versions}. Running the script twice gives byte-identical files.",
        "",
        "* `cases.json`: per case the config text, the class built from it",
        "  (`Class.from_config(json.loads(text))`), `steps`, and diffusers' timesteps, sigmas,",
        "  `init_noise_sigma` and a float64 trajectory (noise, model outputs, every",
        "  `scale_model_input` and `step` result; shape " + "×".join(map(str, SAMPLE_SHAPE)) + ").",
        "* `pipeline/`: `model_index.json`, `transformer/` (copy of `../dit_pixel`),",
        "  `scheduler/scheduler_config.json` written by `DPMSolverMultistepScheduler("
        + ", ".join(f"{k}={v!r}" for k, v in PIPELINE_SCHEDULER.items())
        + ").save_config` (it has `-Infinity`).",
        "",
        f"{len(texts)} configs, {len(cases)} cases:",
        "",
        "| config | class | steps | fields that differ from the class's defaults |",
        "|---|---|---|---|",
    ]
    by_config: dict[tuple[str, str], list[int]] = {}
    for c in cases:
        by_config.setdefault((c["name"], c["class"]), []).append(c["steps"])
    classes = {cls.__name__: cls for cls in KIND}
    for (name, cls_name), steps in by_config.items():
        diff = non_default_fields(texts[name], classes[cls_name])
        shown = ", ".join(f"`{k}`={json.dumps(v)}" for k, v in diff.items()) or "(none)"
        lines.append(f"| `{name}` | {cls_name} | {', '.join(map(str, steps))} | {shown} |")
    lines.append("")
    (OUT / "README.md").write_text("\n".join(lines))


def main() -> None:
    assert sys.byteorder == "little"
    setup_determinism()
    OUT.mkdir(parents=True, exist_ok=True)
    texts = {name: config_text(config) for name, config, _ in MATRIX}
    texts["pipeline"] = write_pipeline()
    cases = []
    for name, _, targets in MATRIX + [("pipeline", None, {DPM: PIPELINE_STEPS})]:
        for cls, step_counts in targets.items():
            for steps in step_counts:
                case = run_case(name, texts[name], cls, steps)
                case["config_text"] = texts[name] if name != "pipeline" else None
                case["config_file"] = "pipeline/scheduler/scheduler_config.json" if name == "pipeline" else None
                cases.append(case)
    versions = (
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, numpy {np.__version__}, "
        f"python {sys.version.split()[0]}"
    )
    payload = {"versions": versions, "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    write_readme(cases, texts, versions)
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{len(texts)} configs, {len(cases)} cases, {size / 1e6:.2f} MB under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
