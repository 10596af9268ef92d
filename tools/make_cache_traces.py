"""Record what the installed cache-dit does, so that the Rust step cache can be held to it.

For a matrix of DBCache configurations (block partition, thresholds, warmup, limits, the
accumulated-diff guard, SCM masks, TaylorSeer orders, step counts, schedulers, batched and
separate CFG) this script runs **the real cache-dit** (``cache_dit.enable_cache``) on a
diffusers ``DiTTransformer2DModel`` inside a diffusers pipeline, from a recorded starting
noise, and writes what the library decided:

* ``nodes/tests/fixtures/cache_traces/trace_dit/``  the seeded DiT the traces run on (diffusers
  folder: ``config.json`` + safetensors);
* ``traces.json``  for every configuration: its cache-dit config, the sampling settings, the
  cached steps and the recorded residual diffs of both branches as cache-dit's ``summary``
  reports them, the number of transformer calls, and the name of its noise and final latents;
* ``traces.safetensors``  the starting noises and every run's final latents;
* ``README.md``  the list of configurations and what each one shows.

The seeded DiT has a denoiser-like skip path, so that residual diffs move the way a trained
model's do (large early, small late) and caching happens at the thresholds people use; see
``build_trace_model``. The trained ``scenes-dit`` (``models/scenes-dit``) runs a few of the
configurations too.

Every run is made twice: in float64 (the parity reference: the Rust side reproduces the
decisions, the diffs and the latents to rounding) and in float32 (what users run).

How to run (from the repository root; the versions are pinned in
``tools/requirements-fixtures.txt``)::

    python -m venv /work/venv
    /work/venv/bin/pip install -r tools/requirements-fixtures.txt
    /work/venv/bin/python tools/make_cache_traces.py

No network access and no pretrained weights are needed. Running it twice gives byte-identical
files.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import cache_dit
import diffusers
from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import json_safe, package_versions, setup_determinism, write_safetensors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "nodes" / "tests" / "fixtures" / "cache_traces"
SCENES_DIT = ROOT / "models" / "scenes-dit"

TRACE_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=3,
    out_channels=6,
    num_layers=12,
    sample_size=16,
    patch_size=2,
    num_embeds_ada_norm=10,
)
TRACE_WEIGHT_SEED = 3000

# The sampling settings every configuration starts from (each entry below changes some).
BASE_RUN = dict(model="trace_dit", steps=25, scheduler="dpm++2m", guidance=4.0, cfg="batched", class_label=3, seed=7)
# cache-dit's DBCacheConfig fields, as the base of every entry (studio-like: F1B0 W4 MC3).
BASE_CACHE = dict(
    Fn_compute_blocks=1,
    Bn_compute_blocks=0,
    residual_diff_threshold=0.12,
    max_warmup_steps=4,
    warmup_interval=1,
    max_cached_steps=-1,
    max_continuous_cached_steps=-1,
)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def build_trace_model(config: dict | None = None, seed: int = TRACE_WEIGHT_SEED) -> DiTTransformer2DModel:
    """A seeded DiT whose output is close to a denoiser's.

    A plain random DiT moves its first block's residual by ~100 % between any two steps: the
    sinusoidal timestep embedding feeds high frequencies straight into every block's adaLN
    modulation, so no step is "similar" to the previous one and nothing is ever cached. Two
    changes make it behave like a trained model along a sampling trajectory:

    * every block's timestep MLP only sees the low frequencies of the sinusoidal embedding
      (the columns of the high ones are zeroed), so the modulation drifts smoothly with t;
    * a skip path: the output projection is the pseudo-inverse of the patch embedding, so
      the prediction is the (normalised) input plus what the blocks add, as a denoiser's
      noise prediction is close to its noisy input early in sampling.
    """
    config = TRACE_CONFIG if config is None else config
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**config)
    for p in model.parameters():
        p.add_(0.02 * torch.randn_like(p))
    half = 128  # diffusers' DiT timestep projection has 256 channels: cos then sin
    keep_from = int(0.4 * half)  # frequency index i: exp(-ln(1e4) * i / half); keep the slow ones
    for block in model.transformer_blocks:
        lin = block.norm1.emb.timestep_embedder.linear_1
        for start in (0, half):
            lin.weight[:, start : start + keep_from] = 0.0
    # Skip path: proj_out_2 maps hidden tokens back to patches by the pseudo-inverse of the
    # patch embedding's convolution (in_channels of the learned-sigma output get it).
    conv = model.pos_embed.proj.weight  # [D, C, p, p]
    d, c, p, _ = conv.shape
    embed = conv.reshape(d, c * p * p)  # hidden = embed @ patch (C, p, p order)
    inverse = torch.linalg.pinv(embed)  # [C*p*p, D]
    out = model.proj_out_2.weight  # [p*p*out_ch, D], rows in (p, q, c) order
    out_ch = config["out_channels"]
    skip = torch.zeros_like(out)
    for ci in range(c):
        for pi in range(p):
            for qi in range(p):
                skip[(pi * p + qi) * out_ch + ci] = inverse[ci * p * p + pi * p + qi]
    out.mul_(0.5).add_(skip)
    model.eval()
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
    return model


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


class DiTTracePipeline(DiffusionPipeline):
    """diffusers' ``DiTPipeline`` loop, taking the starting latents as an argument.

    The class name starts with ``DiT`` so that cache-dit applies its own DiT adapter
    (``Pattern_3`` over ``transformer_blocks`` with ``DiTPatchFunctor``) and runs in
    pipeline mode (every call starts from fresh contexts). Differences from ``DiTPipeline``,
    all needed to replay the same work in Rust: the latents are given (``latents=`` as in
    every other diffusers pipeline, multiplied by ``init_noise_sigma``); the null class is
    the model's own (``num_embeds_ada_norm``, not ImageNet's 1000); the scheduler steps the
    unscaled latents (``DiTPipeline`` steps the output of ``scale_model_input``, which is
    wrong for Euler); and ``separate_cfg`` makes two calls per step, conditional first, as
    pipelines that cache-dit runs with ``enable_separate_cfg`` do.
    """

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, latents, class_label, guidance_scale, num_inference_steps, separate_cfg=False):
        model = self.transformer
        channels = model.config.in_channels
        use_cfg = guidance_scale > 1
        dtype = latents.dtype
        cond = torch.tensor([class_label])
        null = torch.tensor([model.config.num_embeds_ada_norm])
        x = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            def call(inp, labels):
                ts = t[None].expand(inp.shape[0])
                out = model(inp, timestep=ts, class_labels=labels).sample
                return out[:, :channels]

            if use_cfg and separate_cfg:
                inp = self.scheduler.scale_model_input(x, t)
                eps_cond = call(inp, cond)
                eps_uncond = call(inp, null)
            elif use_cfg:
                inp = self.scheduler.scale_model_input(torch.cat([x, x]), t)
                eps_cond, eps_uncond = call(inp, torch.cat([cond, null])).chunk(2)
            else:
                eps_cond = call(self.scheduler.scale_model_input(x, t), cond)
                eps_uncond = None
            eps = eps_cond if eps_uncond is None else eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = self.scheduler.step(eps.to(dtype), t, x).prev_sample
        return x


SCHEDULERS = {
    # DiT's scheduler settings, as the project's built-in defaults (linear betas 1e-4 → 0.02).
    "dpm++2m": lambda: DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "ddim": lambda: DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False),
    "euler": lambda: EulerDiscreteScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
}


def noise_for(model_cfg, seed: int) -> torch.Tensor:
    shape = (1, model_cfg.in_channels, model_cfg.sample_size, model_cfg.sample_size)
    return randn_tensor(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------


def entry(name, note, run=None, cache=None, taylorseer=None, scm=None):
    """One configuration: overrides of BASE_RUN and BASE_CACHE, an optional TaylorSeer order
    and an optional SCM mask (``{"preset": name}`` or ``{"mask": "1101…"}``, with
    ``"policy"``)."""
    return dict(
        name=name,
        note=note,
        run={**BASE_RUN, **(run or {})},
        cache={**BASE_CACHE, **(cache or {})},
        taylorseer=taylorseer,
        scm=scm,
    )


def matrix() -> list[dict]:
    e = []
    # Block partition: the Fn residual is the indicator, Bn blocks always run after the middle.
    for fn in (0, 1, 2, 4, 8):
        for bn in (0, 1, 2):
            e.append(
                entry(
                    f"partition_F{fn}B{bn}",
                    "Fn / Bn partition at threshold 0.08, at most 3 cached steps in a row"
                    + ("; cache-dit refuses Fn 0 (the indicator needs a front block)" if fn == 0 else ""),
                    cache=dict(Fn_compute_blocks=fn, Bn_compute_blocks=bn, residual_diff_threshold=0.08, max_continuous_cached_steps=3),
                )
            )
    for thr in (0.04, 0.06, 0.16, 0.2, 0.3, 1.0, 2.0, 0.0):
        e.append(
            entry(
                f"threshold_{thr}",
                "threshold ≥ 1 caches without measuring (diff −1); ≤ 0 never caches (no diff recorded, rule 6)"
                if thr >= 1 or thr <= 0
                else "the measured diff against the threshold",
                cache=dict(residual_diff_threshold=thr),
            )
        )
    for w, i in ((0, 1), (2, 1), (8, 1), (8, 2), (8, 3), (12, 4)):
        e.append(entry(f"warmup_W{w}I{i}", "warmup window and interval: range(0, W, I) computes", cache=dict(max_warmup_steps=w, warmup_interval=i, residual_diff_threshold=0.2)))
    for mc in (0, 3, 8):
        e.append(entry(f"max_cached_{mc}", "max_cached_steps per branch", cache=dict(max_cached_steps=mc, residual_diff_threshold=0.3)))
    for mcc in (0, 1, 2, 3, 5):
        e.append(
            entry(
                f"max_continuous_{mcc}",
                "max_continuous_cached_steps with every diff below the threshold: the limit decides",
                cache=dict(max_continuous_cached_steps=mcc, residual_diff_threshold=0.3),
            )
        )
    for acc in (0.1, 0.3, 1.0):
        e.append(
            entry(
                f"accumulated_{acc}",
                "max_accumulated_residual_diff_threshold latches once the summed diffs reach it",
                cache=dict(max_accumulated_residual_diff_threshold=acc, residual_diff_threshold=0.12),
            )
        )
    for preset in ("slow", "medium", "fast", "ultra"):
        for policy in ("static", "dynamic"):
            e.append(
                entry(
                    f"scm_{preset}_{policy}",
                    "SCM preset mask (cache_dit.steps_mask); warmup cut to its leading computes",
                    cache=dict(max_warmup_steps=8, residual_diff_threshold=0.12),
                    scm=dict(preset=preset, policy=policy),
                )
            )
    for policy in ("static", "dynamic"):
        e.append(
            entry(
                f"scm_custom_{policy}",
                "a custom mask, shorter than the run (later steps are cache steps)",
                cache=dict(max_warmup_steps=8, residual_diff_threshold=0.12),
                scm=dict(mask="111101101011001100011", policy=policy),
            )
        )
    e.append(entry("scm_fast_dynamic_50", "SCM fast at 50 steps", run=dict(steps=50), cache=dict(max_warmup_steps=8), scm=dict(preset="fast", policy="dynamic")))
    e.append(entry("scm_medium_static_10", "SCM medium at 10 steps (distilled-model bins)", run=dict(steps=10), cache=dict(max_warmup_steps=8), scm=dict(preset="medium", policy="static")))
    for order in (1, 2, 3, 4):
        e.append(entry(f"taylorseer_O{order}", "TaylorSeer forecast of the middle residual", cache=dict(residual_diff_threshold=0.12), taylorseer=order))
    e.append(
        entry(
            "taylorseer_O2_W8I2",
            "TaylorSeer with warmup interval 2: hits inside the warmup window, derivatives only from branch step 3",
            cache=dict(max_warmup_steps=8, warmup_interval=2, residual_diff_threshold=0.2),
            taylorseer=2,
        )
    )
    e.append(entry("taylorseer_O1_F2B1", "TaylorSeer with back blocks", cache=dict(Fn_compute_blocks=2, Bn_compute_blocks=1, residual_diff_threshold=0.12), taylorseer=1))
    e.append(entry("steps_10", "10 steps", run=dict(steps=10), cache=dict(max_warmup_steps=2, residual_diff_threshold=0.2)))
    e.append(entry("steps_50", "50 steps, at most 3 cached in a row", run=dict(steps=50), cache=dict(max_warmup_steps=8, max_continuous_cached_steps=3, residual_diff_threshold=0.08)))
    # Separate CFG: two calls per step (conditional, then unconditional), each its own branch.
    e.append(entry("separate_cfg", "separate CFG: each branch decides on its own diff", run=dict(cfg="separate"), cache=dict(enable_separate_cfg=True, residual_diff_threshold=0.1)))
    e.append(
        entry(
            "separate_cfg_shared_diff",
            "separate CFG, cfg_diff_compute_separate = False: the unconditional call takes the conditional diff",
            run=dict(cfg="separate"),
            cache=dict(enable_separate_cfg=True, cfg_diff_compute_separate=False, residual_diff_threshold=0.1, max_continuous_cached_steps=2),
        )
    )
    e.append(
        entry(
            "separate_cfg_taylorseer_O2",
            "separate CFG with TaylorSeer: one calibrator per branch",
            run=dict(cfg="separate"),
            cache=dict(enable_separate_cfg=True, residual_diff_threshold=0.15, max_continuous_cached_steps=2),
            taylorseer=2,
        )
    )
    e.append(
        entry(
            "separate_cfg_scm_medium",
            "separate CFG with an SCM mask",
            run=dict(cfg="separate"),
            cache=dict(enable_separate_cfg=True, max_warmup_steps=8),
            scm=dict(preset="medium", policy="dynamic"),
        )
    )
    e.append(entry("ddim", "DDIM scheduler", run=dict(scheduler="ddim"), cache=dict(residual_diff_threshold=0.1)))
    e.append(entry("euler", "Euler scheduler (scaled model input)", run=dict(scheduler="euler"), cache=dict(residual_diff_threshold=0.1)))
    e.append(entry("no_cfg", "guidance 1: no CFG, one call per step", run=dict(guidance=1.0), cache=dict(residual_diff_threshold=0.1)))
    # The trained default model: real residual dynamics.
    scenes = dict(model="scenes-dit")
    e.append(entry("scenes_studio_default", "scenes-dit, the studio default (F4B0 W4 MC3 R0.12)", run=scenes, cache=dict(Fn_compute_blocks=4, max_continuous_cached_steps=3)))
    e.append(entry("scenes_F1B0_R0.08", "scenes-dit, first-block indicator", run=scenes, cache=dict(residual_diff_threshold=0.08)))
    e.append(entry("scenes_F8B0_R0.12", "scenes-dit, cache-dit's default Fn", run=scenes, cache=dict(Fn_compute_blocks=8)))
    e.append(entry("scenes_F4B2_R0.2", "scenes-dit, back blocks", run=scenes, cache=dict(Fn_compute_blocks=4, Bn_compute_blocks=2, residual_diff_threshold=0.2)))
    e.append(entry("scenes_taylorseer_O2", "scenes-dit, TaylorSeer order 2", run=scenes, cache=dict(residual_diff_threshold=0.1), taylorseer=2))
    e.append(entry("scenes_scm_medium_dynamic", "scenes-dit, SCM medium dynamic", run=scenes, cache=dict(max_warmup_steps=8, residual_diff_threshold=0.1), scm=dict(preset="medium", policy="dynamic")))
    e.append(
        entry(
            "scenes_separate_shared_diff",
            "scenes-dit, separate CFG sharing the conditional diff",
            run={**scenes, "cfg": "separate"},
            cache=dict(Fn_compute_blocks=4, enable_separate_cfg=True, cfg_diff_compute_separate=False, max_continuous_cached_steps=3),
        )
    )
    e.append(entry("scenes_50_steps", "scenes-dit, 50 steps", run={**scenes, "steps": 50}, cache=dict(Fn_compute_blocks=4, max_continuous_cached_steps=3, residual_diff_threshold=0.12)))
    names = [x["name"] for x in e]
    assert len(names) == len(set(names)), "duplicate names"
    return e


# --------------------------------------------------------------------------------------------
# Running cache-dit
# --------------------------------------------------------------------------------------------


def load_model(name: str, dtype: torch.dtype) -> DiTTransformer2DModel:
    folder = OUT / "trace_dit" if name == "trace_dit" else SCENES_DIT
    return DiTTransformer2DModel.from_pretrained(str(folder)).to(dtype).eval()


def scm_mask(spec, steps: int) -> list[int] | None:
    if spec is None:
        return None
    if "preset" in spec:
        return [int(v) for v in cache_dit.steps_mask(total_steps=steps, mask_policy=spec["preset"])]
    return [int(c) for c in spec["mask"]]


@torch.no_grad()
def run_cache_dit(cfg: dict, noise: torch.Tensor, dtype: torch.dtype) -> dict:
    run, cache = cfg["run"], dict(cfg["cache"])
    mask = scm_mask(cfg["scm"], run["steps"])
    if mask is not None:
        cache["steps_computation_mask"] = mask
        cache["steps_computation_policy"] = cfg["scm"]["policy"]
    model = load_model(run["model"], dtype)
    pipe = DiTTracePipeline(transformer=model, scheduler=SCHEDULERS[run["scheduler"]]())
    pipe.set_progress_bar_config(disable=True)
    calibrator = None if cfg["taylorseer"] is None else TaylorSeerCalibratorConfig(taylorseer_order=cfg["taylorseer"])
    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(**cache), calibrator_config=calibrator)
    try:
        latents = pipe(
            noise.to(dtype),
            run["class_label"],
            run["guidance"],
            run["steps"],
            separate_cfg=run["cfg"] == "separate",
        )
    except AssertionError as err:
        # cache-dit refuses some configurations when the first call checks them (Fn = 0).
        return dict(mask=mask, rejected=str(err))
    # summary() reports the transformer and its one cached block list; both carry the same
    # context's statistics.
    stats = [s for s in cache_dit.summary(pipe, logging=False) if s.cache_options]
    assert stats, cfg["name"]
    s = stats[0]
    for other in stats[1:]:
        assert (other.cached_steps, other.cfg_cached_steps) == (s.cached_steps, s.cfg_cached_steps), cfg["name"]
        assert other.residual_diffs == s.residual_diffs and other.cfg_residual_diffs == s.cfg_residual_diffs, cfg["name"]
    cache_dit.disable_cache(pipe)

    def diffs(d):
        return {int(k): v for k, v in sorted(d.items(), key=lambda kv: int(kv[0]))}

    calls = run["steps"] * (2 if run["cfg"] == "separate" and run["guidance"] > 1 else 1)
    assert s.accumulated_transformer_executed_steps == calls, (cfg["name"], s.accumulated_transformer_executed_steps, calls)
    return dict(
        mask=mask,
        cached_steps=list(s.cached_steps),
        residual_diffs=diffs(s.residual_diffs),
        cfg_cached_steps=list(s.cfg_cached_steps),
        cfg_residual_diffs=diffs(s.cfg_residual_diffs),
        transformer_calls=calls,
        latents=latents,
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def save_trace_model() -> None:
    folder = OUT / "trace_dit"
    shutil.rmtree(folder, ignore_errors=True)
    model = build_trace_model()
    model.save_pretrained(folder, safe_serialization=True)
    reloaded = DiTTransformer2DModel.from_pretrained(str(folder))
    for (k, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), k


def write_readme(rows: list[str]) -> None:
    versions = package_versions()
    versions["cache-dit"] = cache_dit.__version__
    lines = [
        "# cache-dit traces",
        "",
        "Written by `tools/make_cache_traces.py` (do not edit by hand). Each configuration ran "
        "through the installed cache-dit (`cache_dit.enable_cache` on a DiT pipeline, pipeline "
        "mode) from the noise in `traces.safetensors`, in float64 and in float32. "
        "`nodes/tests/cache_traces.rs` replays every one with the project's step cache.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        "",
        "| name | model | steps | cfg | cache-dit config | hits f64 (cond + uncond) / calls | note |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    (OUT / "README.md").write_text("\n".join(lines))


def config_string(cfg: dict) -> str:
    c = cfg["cache"]
    s = (
        f"F{c['Fn_compute_blocks']}B{c['Bn_compute_blocks']}_W{c['max_warmup_steps']}I{c['warmup_interval']}"
        f"M{max(0, c['max_cached_steps'])}MC{max(0, c['max_continuous_cached_steps'])}_R{c['residual_diff_threshold']}"
    )
    if c.get("max_accumulated_residual_diff_threshold") is not None:
        s += f"_A{c['max_accumulated_residual_diff_threshold']}"
    if cfg["scm"] is not None:
        s += f"_SCM-{cfg['scm'].get('preset', 'custom')}-{cfg['scm']['policy']}"
    if cfg["taylorseer"] is not None:
        s += f"_T1O{cfg['taylorseer']}"
    if c.get("enable_separate_cfg"):
        s += "_CFG" + ("" if c.get("cfg_diff_compute_separate", True) else "-shared")
    return s


def main() -> None:
    assert sys.byteorder == "little", "safetensors data must be little-endian"
    setup_determinism()
    logging.getLogger("cache_dit").setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    save_trace_model()

    tensors: dict[str, torch.Tensor] = {}
    configs = []
    rows = []
    for cfg in matrix():
        run = cfg["run"]
        model_cfg = load_model(run["model"], torch.float32).config
        noise_key = f"noise/{run['model']}/{run['seed']}"
        noise = noise_for(model_cfg, run["seed"])
        tensors.setdefault(noise_key, noise)
        record = dict(name=cfg["name"], note=cfg["note"], run=run, cache=cfg["cache"], taylorseer=cfg["taylorseer"], scm=cfg["scm"], noise=noise_key)
        for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            trace = run_cache_dit(cfg, noise, dtype)
            record["mask"] = trace.pop("mask")
            if "rejected" in trace:
                record["rejected"] = trace["rejected"]
                break
            latents = trace.pop("latents")
            assert torch.isfinite(latents).all(), cfg["name"]
            key = f"final/{cfg['name']}/{tag}"
            tensors[key] = latents.to(dtype)
            record[tag] = dict(**trace, latents=key)
        configs.append(record)
        if "rejected" in record:
            rows.append(
                f"| `{cfg['name']}` | {run['model']} | {run['steps']} | {run['cfg']} | `{config_string(cfg)}` | "
                f"rejected: {record['rejected']} | {cfg['note']} |"
            )
            print(f"{cfg['name']:32s} rejected: {record['rejected']}")
            continue
        f64 = record["f64"]
        hits = f"{len(f64['cached_steps'])} + {len(f64['cfg_cached_steps'])} / {f64['transformer_calls']}"
        same = f64["cached_steps"] == record["f32"]["cached_steps"] and f64["cfg_cached_steps"] == record["f32"]["cfg_cached_steps"]
        rows.append(
            f"| `{cfg['name']}` | {run['model']} | {run['steps']} | {run['cfg'] if run['guidance'] > 1 else 'off'} | "
            f"`{config_string(cfg)}` | {hits}{'' if same else ' (f32 differs)'} | {cfg['note']} |"
        )
        print(f"{cfg['name']:32s} {hits:>12s} cached {f64['cached_steps']} {f64['cfg_cached_steps'] or ''}")

    doc = dict(
        produced_by="tools/make_cache_traces.py",
        versions={**package_versions(), "cache-dit": cache_dit.__version__},
        configs=configs,
    )
    (OUT / "traces.json").write_text(json.dumps(json_safe(doc), indent=1, sort_keys=True) + "\n")
    write_safetensors(OUT / "traces.safetensors", tensors, {"produced_by": "tools/make_cache_traces.py"})
    write_readme(rows)
    print(f"{len(configs)} configurations written to {OUT}")


if __name__ == "__main__":
    main()
