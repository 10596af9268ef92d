"""Generate golden test fixtures for the Rust (candle) re-implementation of DiT.

What it makes (everything under ``nodes/tests/fixtures/``, overwritten on every run):

* ``dit_pixel/``       tiny random ``DiTTransformer2DModel`` (3-channel "pixel" space,
                       learned sigma: out_channels = 2 * in_channels) saved as safetensors.
* ``dit_pixel_bin/``   the same weights saved as a PyTorch pickle (``.bin``).
* ``dit_latent/``      tiny random 4-channel "latent" DiT, safetensors.
* ``forward_*.safetensors``  one forward pass each: inputs, output and intermediates
                       (patch+position embedding, every transformer block, conditioning).
* ``sample_*.safetensors``   whole sampling runs with classifier-free guidance, made
                       with diffusers' own ``DiTPipeline`` where possible: initial noise,
                       the latents after every step, the guided model output that was fed
                       to every scheduler step, and the timesteps / sigmas used.
* ``schedulers.json``  timestep / sigma tables of DDIM, DPM-Solver++ and Euler for a few
                       step counts, plus ``alphas_cumprod``.
* ``vae_4/``, ``vae_16/``  tiny random ``AutoencoderKL``s: 4 latent channels (SD / DiT
                       style, with quant convs) and 16 (FLUX style: no quant convs,
                       ``shift_factor``), saved as safetensors.
* ``vae_decode.safetensors``  their decodes of seeded latents, plain and tiled
                       (``enable_tiling``, latents larger than one tile).
* ``dit_pipeline/``    a whole tiny ``DiTPipeline`` folder (``model_index.json``,
                       ``transformer/``, ``vae/``, ``scheduler/``) and
                       ``sample_dit_pipeline.safetensors``: the real pipeline's run on it, its
                       final latents and the RGB image its VAE made.
* ``README.md``        the list of files and tensors (generated from what was written).

Everything runs on the CPU in float32 with one thread, fixed seeds and
``torch.use_deterministic_algorithms(True)``; running it twice on one machine gives
byte-identical files. Another CPU (other SIMD kernels in torch) may differ in the last bits
(measured: up to 1.3e-6 on a forward, 6.7e-4 on a 1155-magnitude sample); the committed DiT
fixtures are from the machine that first made them and were kept when the VAE fixtures were
added.

How to run (from the repository root)::

    python -m venv /work/.venv-fixtures
    /work/.venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    /work/.venv-fixtures/bin/python tools/make_fixtures.py

No network access and no pretrained weights are needed.

The FLUX.1 fixtures (``flux_pipeline/``, ``flux_schnell_transformer/``,
``flux_golden.safetensors``) come from ``tools/make_flux_fixtures.py``, which needs the same
environment. This script rewrites ``README.md`` from scratch, so run that one after it: it
puts its FLUX section back.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import diffusers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.torch_utils import randn_tensor

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "nodes" / "tests" / "fixtures"

PIXEL_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=3,
    out_channels=6,
    num_layers=2,
    sample_size=16,
    patch_size=4,
    num_embeds_ada_norm=10,
)
LATENT_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=3,
    sample_size=8,
    patch_size=2,
    num_embeds_ada_norm=10,
)
PIXEL_WEIGHT_SEED = 1000
LATENT_WEIGHT_SEED = 2000
FORWARD_INPUT_SEED = 42
# Every parameter gets this much extra gaussian noise so that no weight or bias is exactly 0 or 1.
WEIGHT_NOISE = 0.02

# diffusers' DiTPipeline hardcodes the ImageNet null class id.
PIPELINE_NULL_CLASS = 1000

STEP_COUNTS = [1, 2, 7, 10, 25, 50, 100]


def setup_determinism() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    # progress bars and deprecation chatter are not useful here
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


# --------------------------------------------------------------------------------------------
# Deterministic safetensors writer
# --------------------------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.float64: "F64", torch.int32: "I32"}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Write a .safetensors file with a byte-stable layout.

    ``safetensors.torch.save_file`` serialises ``__metadata__`` from a Rust HashMap, so the
    key order (and therefore the file bytes) changes from run to run when there is more than
    one metadata entry. The format is simple enough to write by hand: an 8-byte little-endian
    header length, a JSON header (here with sorted keys, padded with spaces to a multiple of
    8 bytes, as the reference implementation does) and the raw little-endian tensor data.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        data = t.numpy().tobytes()  # native order; little-endian asserted in main()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)

    # round-trip check with the official reader
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == sorted(tensors)
        for name in tensors:
            assert torch.equal(f.get_tensor(name), tensors[name].cpu()), name
        assert (f.metadata() or {}) == ({k: str(v) for k, v in metadata.items()} if metadata else {})


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def json_safe(value):
    """Replaces non-finite floats (which JSON cannot hold) with "inf" / "-inf" / "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_model(config: dict, seed: int) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(WEIGHT_NOISE * torch.randn_like(p))
    # eval() matters: in training mode LabelEmbedding randomly replaces labels by the null class.
    model.eval()
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        assert not ((p == 0) | (p == 1)).any(), f"{name} has an exact 0 or 1"
    return model


def check_state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def save_models() -> tuple[DiTTransformer2DModel, DiTTransformer2DModel]:
    pixel = build_model(PIXEL_CONFIG, PIXEL_WEIGHT_SEED)
    latent = build_model(LATENT_CONFIG, LATENT_WEIGHT_SEED)
    pixel.fixture_dir, latent.fixture_dir = "dit_pixel", "dit_latent"

    pixel.save_pretrained(OUT / "dit_pixel", safe_serialization=True)
    pixel.save_pretrained(OUT / "dit_pixel_bin", safe_serialization=False)
    latent.save_pretrained(OUT / "dit_latent", safe_serialization=True)

    # What was written must load back to exactly these weights.
    for model, sub in [(pixel, "dit_pixel"), (pixel, "dit_pixel_bin"), (latent, "dit_latent")]:
        expected = {"dit_pixel_bin": "diffusion_pytorch_model.bin"}.get(sub, "diffusion_pytorch_model.safetensors")
        assert sorted(os.listdir(OUT / sub)) == sorted(["config.json", expected]), os.listdir(OUT / sub)
        reloaded = DiTTransformer2DModel.from_pretrained(OUT / sub, use_safetensors=sub != "dit_pixel_bin")
        check_state_dicts_equal(model, reloaded)
    return pixel, latent


# --------------------------------------------------------------------------------------------
# Forward fixtures
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def forward_fixture(model, name, x_shape, timestep, class_labels):
    gen = torch.Generator().manual_seed(FORWARD_INPUT_SEED)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float32)
    timestep = torch.tensor(timestep, dtype=torch.float32)
    class_labels = torch.tensor(class_labels, dtype=torch.int64)

    captured: dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(_module, _inputs, output):
            captured[key] = output.detach().clone()

        return hook

    handles = [model.pos_embed.register_forward_hook(keep("embed"))]
    for i, block in enumerate(model.transformer_blocks):
        handles.append(block.register_forward_hook(keep(f"block_{i}")))
    try:
        out = model(x, timestep=timestep, class_labels=class_labels).sample
    finally:
        for h in handles:
            h.remove()
    cond = model.transformer_blocks[0].norm1.emb(timestep, class_labels, hidden_dtype=torch.float32)

    assert torch.isfinite(out).all()
    max_abs = out.abs().max().item()
    assert 0.05 < max_abs < 50, f"{name}: output magnitude {max_abs} is not of order 1"

    tensors = {"x": x, "timestep": timestep, "class_labels": class_labels, "out": out, "cond": cond, **captured}
    write_safetensors(OUT / name, tensors, {"model": model_dir_for(model), "input_seed": str(FORWARD_INPUT_SEED)})
    return tensors


def model_dir_for(model) -> str:
    """The fixture directory a model was saved to (set in save_models)."""
    return model.fixture_dir


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


class NullClassRemap(torch.nn.Module):
    """Stand-in for ``pipe.transformer`` that forwards to the real DiT.

    DiTPipeline builds the unconditional half of the CFG batch with the hardcoded ImageNet
    null id 1000. Our tiny models have ``num_embeds_ada_norm = 10`` classes, so their null
    (classifier-free) class is 10 (the extra last row of the label embedding table). This
    wrapper replaces 1000 by 10 and changes nothing else; it also records every call.
    """

    def __init__(self, model: DiTTransformer2DModel):
        super().__init__()
        self.model = model
        self.num_classes = model.config.num_embeds_ada_norm
        self.calls: list[dict[str, torch.Tensor]] = []

    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self):
        return self.model.dtype

    @property
    def device(self):  # DiffusionPipeline.device asks every nn.Module component for it
        return self.model.device

    def forward(self, hidden_states, timestep=None, class_labels=None, **kwargs):
        assert (class_labels[class_labels != PIPELINE_NULL_CLASS] < self.num_classes).all()
        class_labels = torch.where(class_labels == PIPELINE_NULL_CLASS, self.num_classes, class_labels)
        self.calls.append(
            {"hidden_states": hidden_states.clone(), "timestep": timestep.clone(), "class_labels": class_labels.clone()}
        )
        return self.model(hidden_states, timestep=timestep, class_labels=class_labels, **kwargs)


class StandInVAE(torch.nn.Module):
    """Replaces the VAE: DiTPipeline always finishes with
    ``self.vae.decode(1 / self.vae.config.scaling_factor * latents).sample``.
    With scaling_factor 1.0 this hands us the final latents untouched; we record them and
    return them unchanged (in the ``.sample`` structure the pipeline expects)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0)
        self.decoded: list[torch.Tensor] = []

    @property
    def device(self):  # DiffusionPipeline.device asks every nn.Module component for it
        return torch.device("cpu")

    def decode(self, latents):
        self.decoded.append(latents.clone())
        return SimpleNamespace(sample=latents)


def record_scheduler_steps(scheduler):
    """Wrap ``scheduler.step`` on this instance so every call's input/output is kept."""
    records: list[dict[str, torch.Tensor]] = []
    original_step = scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        out = original_step(model_output, timestep, sample, *args, **kwargs)
        records.append(
            {"model_output": model_output.clone(), "sample": sample.clone(), "prev_sample": out.prev_sample.clone()}
        )
        return out

    scheduler.step = step
    return records


def scheduler_metadata(scheduler) -> dict[str, str]:
    cfg = dict(scheduler.config)
    meta = {"scheduler": type(scheduler).__name__}
    for k, v in sorted(cfg.items()):
        if k.startswith("_"):
            continue
        meta[f"scheduler.{k}"] = json.dumps(v)
    return meta


def make_noise(shape, seed) -> torch.Tensor:
    # exactly how DiTPipeline draws its initial latents
    return randn_tensor(shape, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), dtype=torch.float32)


def halves(x: torch.Tensor, cfg: bool) -> torch.Tensor:
    """The pipeline steps the doubled CFG batch; both halves are identical, keep the first."""
    if not cfg:
        return x
    first, second = x.chunk(2, dim=0)
    assert torch.equal(first, second)
    return first


@torch.no_grad()
def dit_cfg_loop(
    model, scheduler, noise, class_labels, guidance_scale, num_inference_steps, *, scale_init_noise, step_on_scaled_input
):
    """A line-by-line copy of ``DiTPipeline.__call__``'s denoising loop.

    ``scale_init_noise``: multiply the initial noise by ``scheduler.init_noise_sigma``
    (standard diffusers pipelines do, DiTPipeline does not).
    ``step_on_scaled_input``: DiTPipeline overwrites ``latent_model_input`` with the output of
    ``scale_model_input`` and hands that to ``scheduler.step`` as the current sample. That is
    harmless for DDIM/DPM (scale_model_input is the identity) but not for Euler. With False,
    the scaled tensor only goes into the model, as in e.g. StableDiffusionPipeline.
    """
    latent_channels = model.config.in_channels
    null_class = model.config.num_embeds_ada_norm
    batch_size = len(class_labels)
    cfg = guidance_scale > 1

    latents = noise * scheduler.init_noise_sigma if scale_init_noise else noise
    latent_model_input = torch.cat([latents] * 2) if cfg else latents
    class_labels = torch.tensor(class_labels).reshape(-1)
    class_null = torch.tensor([null_class] * batch_size)
    class_labels_input = torch.cat([class_labels, class_null], 0) if cfg else class_labels

    steps, model_outputs = [], []
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        if cfg:
            half = latent_model_input[: len(latent_model_input) // 2]
            latent_model_input = torch.cat([half, half], dim=0)
        scaled = scheduler.scale_model_input(latent_model_input, t)
        if step_on_scaled_input:
            latent_model_input = scaled

        timesteps = t[None].expand(scaled.shape[0])
        noise_pred = model(scaled, timestep=timesteps, class_labels=class_labels_input).sample

        if cfg:
            eps, rest = noise_pred[:, :latent_channels], noise_pred[:, latent_channels:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            noise_pred = torch.cat([eps, rest], dim=1)

        # learned sigma: only the first in_channels channels (epsilon) are used
        if model.config.out_channels // 2 == latent_channels:
            model_output, _ = torch.split(noise_pred, latent_channels, dim=1)
        else:
            model_output = noise_pred

        latent_model_input = scheduler.step(model_output, t, latent_model_input).prev_sample
        steps.append(halves(latent_model_input, cfg))
        model_outputs.append(halves(model_output, cfg))

    final = latent_model_input.chunk(2, dim=0)[0] if cfg else latent_model_input
    return final, torch.stack(steps), torch.stack(model_outputs)


@torch.no_grad()
def run_dit_pipeline(model, scheduler, class_labels, guidance_scale, num_inference_steps, seed):
    """Run the real diffusers DiTPipeline and return what it computed."""
    transformer = NullClassRemap(model)
    vae = StandInVAE()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    records = record_scheduler_steps(scheduler)
    pipe(
        class_labels=list(class_labels),
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps,
        output_type="pt",
    )
    cfg = guidance_scale > 1
    assert len(vae.decoded) == 1 and len(records) == num_inference_steps
    return {
        "first_model_input": halves(transformer.calls[0]["hidden_states"], cfg),
        "class_labels_input": transformer.calls[0]["class_labels"],
        "sample": vae.decoded[0],
        "steps": torch.stack([halves(r["prev_sample"], cfg) for r in records]),
        "model_outputs": torch.stack([halves(r["model_output"], cfg) for r in records]),
        "timesteps": scheduler.timesteps.clone(),
    }


def sampling_fixture(
    name, model, scheduler_factory, *, steps, seed, class_labels, guidance_scale, use_pipeline, notes, **loop_kwargs
):
    model_cfg = model.config
    shape = (len(class_labels), model_cfg.in_channels, model_cfg.sample_size, model_cfg.sample_size)
    noise = make_noise(shape, seed)

    scheduler = scheduler_factory()
    final, step_latents, model_outputs = dit_cfg_loop(
        model, scheduler, noise, class_labels, guidance_scale, steps, **loop_kwargs
    )
    timesteps = scheduler.timesteps.clone()
    init_noise_sigma = float(scheduler.init_noise_sigma)
    sigmas = getattr(scheduler, "sigmas", None)

    if use_pipeline:
        # The real pipeline must agree bit for bit with the manual loop above.
        ref = run_dit_pipeline(model, scheduler_factory(), class_labels, guidance_scale, steps, seed)
        assert torch.equal(ref["first_model_input"], noise), "pipeline did not start from `noise`"
        assert torch.equal(ref["timesteps"], timesteps)
        for key, mine in [("sample", final), ("steps", step_latents), ("model_outputs", model_outputs)]:
            assert torch.equal(ref[key], mine), f"{name}: pipeline and manual loop disagree on {key}"
        final, step_latents, model_outputs = ref["sample"], ref["steps"], ref["model_outputs"]

    assert torch.equal(step_latents[-1], final)
    assert torch.isfinite(step_latents).all()

    tensors = {
        "noise": noise,
        "class_labels": torch.tensor(class_labels, dtype=torch.int64),
        "timesteps": timesteps.to(torch.float32),
        "steps": step_latents,
        "model_outputs": model_outputs,
        "sample": final,
    }
    if sigmas is not None:
        tensors["sigmas"] = sigmas.to(torch.float32)

    metadata = {
        "model": model_dir_for(model),
        "num_inference_steps": str(steps),
        "seed": str(seed),
        "guidance_scale": repr(float(guidance_scale)),
        "class_labels": json.dumps(list(class_labels)),
        "null_class": str(model_cfg.num_embeds_ada_norm),
        "init_noise_sigma": repr(init_noise_sigma),
        "initial_latents": "noise * init_noise_sigma" if loop_kwargs["scale_init_noise"] else "noise",
        "scheduler_step_sample": "scale_model_input output (as DiTPipeline)"
        if loop_kwargs["step_on_scaled_input"]
        else "unscaled latents (as StableDiffusionPipeline)",
        "produced_by": "diffusers.DiTPipeline" if use_pipeline else "tools/make_fixtures.py dit_cfg_loop",
        "notes": notes,
        **scheduler_metadata(scheduler),
    }
    write_safetensors(OUT / name, tensors, metadata)
    return tensors, metadata


@torch.no_grad()
def float64_drift(forward_specs, sampling_specs) -> list[tuple[str, str]]:
    """How far the fixtures move when the model runs in float64 (a conditioning check)."""
    from safetensors.torch import load_file

    rows = []
    for name, model, *_ in forward_specs:
        d = load_file(str(OUT / name))
        m64 = copy.deepcopy(model).double()
        out = m64(d["x"].double(), timestep=d["timestep"].double(), class_labels=d["class_labels"]).sample
        err = (out - d["out"].double()).abs().max().item()
        rows.append((name, f"max abs diff of `out` {err:.1e}"))
    for name, model, factory, kw in sampling_specs:
        d = load_file(str(OUT / name))
        loop_kw = {k: kw[k] for k in ("scale_init_noise", "step_on_scaled_input")}
        final = dit_cfg_loop(copy.deepcopy(model).double(), factory(), d["noise"].double(), kw["class_labels"],
                             kw["guidance_scale"], kw["steps"], **loop_kw)[0]
        err = (final - d["sample"].double()).abs().max().item()
        rows.append((name, f"max abs diff of `sample` {err:.1e} ({err / d['sample'].abs().max().item():.1e} of max|sample|)"))
    return rows


# --------------------------------------------------------------------------------------------
# Scheduler tables
# --------------------------------------------------------------------------------------------


def f32_list(t) -> list[float]:
    return [float(v) for v in torch.as_tensor(t).to(torch.float32).reshape(-1).tolist()]


def scheduler_tables() -> dict:
    factories = {
        "DDIMScheduler": lambda: DDIMScheduler(clip_sample=False),
        "DPMSolverMultistepScheduler": lambda: DPMSolverMultistepScheduler(),
        "EulerDiscreteScheduler": lambda: EulerDiscreteScheduler(),
    }
    tables: dict[str, object] = {
        "_about": "Generated by tools/make_fixtures.py. Values are float32 widened to float64 "
        "(exact). timesteps are float even where diffusers keeps int64 (DDIM, DPM).",
        "diffusers_version": diffusers.__version__,
        "alphas_cumprod": f32_list(DDIMScheduler().alphas_cumprod),
        "schedulers": {},
    }
    for name, factory in factories.items():
        sched = factory()
        assert torch.equal(sched.alphas_cumprod, DDIMScheduler().alphas_cumprod)
        entry = {"config": {k: v for k, v in sorted(dict(sched.config).items()) if not k.startswith("_")}, "steps": {}}
        for n in STEP_COUNTS:
            sched = factory()
            sched.set_timesteps(n)
            row = {
                "timesteps": f32_list(sched.timesteps),
                "timesteps_dtype": str(sched.timesteps.dtype).replace("torch.", ""),
                "init_noise_sigma": float(sched.init_noise_sigma),
            }
            if name != "DDIMScheduler":
                row["sigmas"] = f32_list(sched.sigmas)
            entry["steps"][str(n)] = row
        tables["schedulers"][name] = entry
    return tables


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

README_INTRO = """\
# Golden fixtures for the DiT re-implementation

Generated by `tools/make_fixtures.py` from the upstream reference (PyTorch + diffusers on
the CPU, float32, one thread, fixed seeds, deterministic algorithms). Do not edit by hand;
regenerate with

    /work/.venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    /work/.venv-fixtures/bin/python tools/make_fixtures.py

Versions: {versions}. Running the script twice gives byte-identical files.

## Models (random weights)

`DiTTransformer2DModel` built from the config below with `torch.manual_seed(seed)`, default
PyTorch init, then every parameter `p += 0.02 * randn_like(p)` (so no weight/bias is exactly 0
or 1), `eval()` mode (in train mode diffusers' `LabelEmbedding` randomly drops labels).
The label table has `num_embeds_ada_norm + 1 = 11` rows; row 10 is the null (CFG) class.
The sinusoidal `pos_embed.pos_embed` buffer is *not* stored in the weights (non-persistent):
it must be computed (diffusers `get_2d_sincos_pos_embed`, `base_size = sample_size / patch_size`,
grid scaled by `base_size / grid_size` at non-native sizes).

| dir | seed | config | files |
|---|---|---|---|
{models}

## Forward fixtures

Input `x` = `torch.randn(shape, generator=torch.Generator().manual_seed({input_seed}))`.
`embed` = output of `pos_embed` (patch conv + position embedding, [B, N, D]); `block_i` = output of
`transformer_blocks[i]`; `cond` = `transformer_blocks[0].norm1.emb(timestep, class_labels,
hidden_dtype=float32)` (timestep + class embedding, [B, D], also what the final layer uses);
`out` = `.sample` ([B, out_channels, H, W], first `in_channels` channels = epsilon, the rest =
learned variance).

{forward}

## Sampling fixtures

Shape convention: `steps` is [num_steps, B, C, H, W] = the latents after each scheduler step
(`steps[-1] == sample`), `model_outputs` is [num_steps, B, C, H, W] = the (guided, learned-sigma
split off) epsilon handed to `scheduler.step` at each step, `timesteps` the scheduler timesteps
(float32 here; int64 in diffusers for DDIM/DPM), `sigmas` the scheduler's `sigmas` after
`set_timesteps` (num_steps + 1 values, last = 0; DPM and Euler only), `noise` the initial noise =
`randn_tensor(shape, generator=torch.Generator().manual_seed(seed))` (unscaled).
With CFG the pipeline runs the model on `cat([x, x])` with labels `cat([labels, null])`, computes
`eps = uncond + g * (cond - uncond)`, and steps the doubled batch with `cat([eps, eps])`; both
halves are bit-identical, the fixture keeps one. All settings are also in each file's
safetensors metadata (`scheduler.*` = the full scheduler config as JSON values).

Files marked *DiTPipeline* were produced by the real `diffusers.DiTPipeline.__call__`, with two
stand-ins: the VAE is an object whose `decode` returns its input (scaling_factor 1.0), so the
pre-decode latents are the result; the transformer is wrapped to replace the pipeline's
hardcoded ImageNet null label 1000 by 10 (the null class of these 10-class models). The script
also runs its own line-by-line copy of the loop and asserts both agree bit for bit.

{sampling}

## schedulers.json

`alphas_cumprod` (1000 float32 values; identical for the three schedulers) and, for
`DDIMScheduler(clip_sample=False)`, `DPMSolverMultistepScheduler()`, `EulerDiscreteScheduler()`
(all other settings default; full config included) and num_inference_steps in {step_counts}:
`timesteps` (as floats), `timesteps_dtype` (diffusers' dtype), `init_noise_sigma` and, for DPM
and Euler, `sigmas` (float32 values, num_steps + 1 of them).

## Tolerances

Random weights predict an epsilon that does not match the input, so the predicted x0 is of
order |x| / sqrt(alphas_cumprod) and the final samples reach a few hundred. The runs are
nevertheless well conditioned: re-running them with the model in float64 moves them by

{drift}

so compare samples with a tolerance relative to their max-abs value (e.g. 1e-5 * max|sample|),
forward outputs with ~1e-5 absolute.

## Diffusers behaviour a re-implementation must copy

* Model: every transformer block has its *own* `norm1.emb` (timestep MLP + label table) and
  `norm1.linear` (6*D: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, in that
  order); the final layer reuses block 0's `norm1.emb`, then `proj_out_1(silu(cond))` splits into
  **shift, scale** (shift first). LayerNorms have no affine parameters; eps is 1e-6 for `norm1`
  and `norm_out` but `norm_eps` = 1e-5 for the feed-forward `norm3`. GELU is the tanh
  approximation. Timestep features: 256 channels, `exp(-ln(10000) * i / (128 - 1))`
  (downscale_freq_shift = 1), `[cos, sin]` order (flip_sin_to_cos). Unpatchify assumes a square
  token grid (`h = w = sqrt(N)`), channel-last inside a patch (`nhwpqc -> nchpwq`).
* Learned sigma: `out_channels = 2 * in_channels`; only the first `in_channels` channels
  (epsilon) go into CFG and the scheduler, the variance channels are dropped.
* CFG: `eps = uncond + g * (cond - uncond)` on the epsilon channels only; the whole doubled
  batch is stepped (both halves identical); guidance is on only when `guidance_scale > 1`.
  The null label is the last row of the label table (diffusers' DiTPipeline hardcodes 1000,
  the ImageNet value).
* DiTPipeline never multiplies the initial noise by `init_noise_sigma` and feeds the output of
  `scale_model_input` to `scheduler.step` as the current sample; both only matter for Euler
  (see the two Euler files).
* DDIM default `timestep_spacing="leading"`: `t_i = (N-1-i) * (1000 // N)` (25 steps: 960 ... 0,
  never 999; 1 step: just t = 0); the previous timestep is `t - 1000 // N`, and below 0 it uses
  alpha_cumprod = 1 (`set_alpha_to_one`). eta = 0.
* DPM-Solver++ default `timestep_spacing="linspace"`: `round(linspace(0, 999, N + 1))` reversed,
  last dropped (numpy rounds half to even), int64. sigmas = sqrt((1 - acp) / acp) in float32 at
  those timesteps, plus a final 0. First step and last step are first order (last because
  `final_sigmas_type="zero"`: sigma 0 gives lambda = -inf and the update returns x0 exactly),
  the rest second-order midpoint. alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t.
* Euler default `timestep_spacing="linspace"`: float32 `linspace(0, 999, N)` reversed
  (fractional timesteps, e.g. 957.375), sigmas = `np.interp` (in float64) of the float32 sigma
  table at those timesteps, cast to float32, plus a final 0. `init_noise_sigma` = max(sigmas)
  after `set_timesteps` (157.40727 except for N = 1, where the only timestep is 0).
  `scale_model_input` divides by sqrt(sigma^2 + 1); `step` (s_churn = 0) computes, in this
  order, `x0 = x - sigma * eps`, `d = (x - x0) / sigma`, `x + d * (sigma_next - sigma)`.
* All scheduler arithmetic is float32 (`alphas_cumprod` from float32 `linspace` betas and
  `cumprod`).
"""


def describe_tensors(path: Path) -> str:
    from safetensors import safe_open

    lines = ["| tensor | shape | dtype |", "|---|---|---|"]
    with safe_open(str(path), framework="pt") as f:
        for key in sorted(f.keys()):
            t = f.get_tensor(key)
            lines.append(f"| `{key}` | {list(t.shape)} | {str(t.dtype).replace('torch.', '')} |")
    return "\n".join(lines)


def write_readme(forward_specs, sampling_specs, model_specs, drift):
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    models = "\n".join(
        f"| `{d}/` | {seed} | `{json.dumps(cfg)}` | {', '.join(sorted(os.listdir(OUT / d)))} |"
        for d, seed, cfg in model_specs
    )
    forward = "\n\n".join(
        f"### `{name}` ({size_of(OUT / name)})\n\nModel `{model}/`, {desc}. "
        f"max|out| = {max_abs(OUT / name, 'out')!r}.\n\n{describe_tensors(OUT / name)}"
        for name, model, desc in forward_specs
    )
    sampling_parts = []
    for name, meta in sampling_specs:
        settings = ", ".join(
            f"{k} = `{meta[k]}`"
            for k in ["model", "num_inference_steps", "seed", "class_labels", "guidance_scale", "null_class",
                      "init_noise_sigma", "initial_latents", "scheduler_step_sample"]
        )
        sched = ", ".join(
            f"{k[len('scheduler.'):]}={meta[k]}"
            for k in sorted(meta)
            if k.startswith("scheduler.")
            and k[len("scheduler."):] in {"beta_schedule", "beta_start", "beta_end", "num_train_timesteps",
                                          "timestep_spacing", "solver_order", "algorithm_type", "clip_sample",
                                          "set_alpha_to_one", "steps_offset", "prediction_type",
                                          "final_sigmas_type", "lower_order_final"}
        )
        sampling_parts.append(
            f"### `{name}` ({size_of(OUT / name)}) — {meta['produced_by']}\n\n{meta['notes']}\n\n"
            f"{settings}. max|sample| = {max_abs(OUT / name, 'sample')!r}.\n\nScheduler `{meta['scheduler']}`: {sched}.\n\n{describe_tensors(OUT / name)}"
        )
    text = README_INTRO.format(
        versions=versions,
        models=models,
        input_seed=FORWARD_INPUT_SEED,
        forward=forward,
        sampling="\n\n".join(sampling_parts),
        step_counts=STEP_COUNTS,
        drift="\n".join(f"* `{name}`: {text}" for name, text in drift),
    )
    (OUT / "README.md").write_text(text)


def max_abs(path: Path, key: str) -> float:
    from safetensors.torch import load_file

    return load_file(str(path))[key].abs().max().item()


def size_of(path: Path) -> str:
    return f"{path.stat().st_size:,} bytes"


def package_versions() -> dict[str, str]:
    import safetensors

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# VAE and a whole DiT pipeline
# --------------------------------------------------------------------------------------------

VAE_CONFIGS = {
    "vae_4": dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.18215,
    ),
    "vae_16": dict(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.3611,
        shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
    ),
}
VAE_WEIGHT_SEED = 3000
VAE_INPUT_SEED = 43


def build_vae(name: str) -> AutoencoderKL:
    torch.manual_seed(VAE_WEIGHT_SEED + len(name))
    vae = AutoencoderKL(**VAE_CONFIGS[name])
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(WEIGHT_NOISE * torch.randn_like(p))
    vae.eval()
    return vae


def unscale(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """What a pipeline feeds the decoder: DiT/SD ``1 / scaling_factor * latents``, FLUX
    ``latents / scaling_factor + shift_factor``."""
    shift = vae.config.shift_factor
    if shift is None:
        return 1 / vae.config.scaling_factor * latents
    return latents / vae.config.scaling_factor + shift


@torch.no_grad()
def vae_fixtures() -> dict[str, AutoencoderKL]:
    vaes = {}
    tensors = {}
    for name in VAE_CONFIGS:
        vae = build_vae(name)
        shutil.rmtree(OUT / name, ignore_errors=True)
        vae.save_pretrained(OUT / name, safe_serialization=True)
        check_state_dicts_equal(vae, AutoencoderKL.from_pretrained(OUT / name))
        vaes[name] = vae
        c = vae.config.latent_channels
        gen = torch.Generator().manual_seed(VAE_INPUT_SEED)
        plain = torch.randn((2, c, 8, 8), generator=gen, dtype=torch.float32)
        # 12x12 latents with 8-latent tiles: a 2x2 grid of overlapping tiles, blended.
        large = torch.randn((1, c, 12, 10), generator=gen, dtype=torch.float32)
        vae.disable_tiling()
        tensors[f"{name}.latents"] = plain
        tensors[f"{name}.decoded"] = vae.decode(unscale(vae, plain)).sample
        tensors[f"{name}.untiled_large"] = vae.decode(unscale(vae, large)).sample
        vae.enable_tiling()
        assert vae.tile_latent_min_size == 8 and vae.tile_sample_min_size == 16
        tensors[f"{name}.large_latents"] = large
        tensors[f"{name}.tiled_large"] = vae.decode(unscale(vae, large)).sample
        vae.disable_tiling()
    write_safetensors(
        OUT / "vae_decode.safetensors",
        tensors,
        {
            "produced_by": "diffusers.AutoencoderKL.decode (tiled: enable_tiling)",
            "input": "latents as the transformer gives them; the decoder gets unscale(latents)",
            "unscale": "1 / scaling_factor * latents, or latents / scaling_factor + shift_factor",
            "output": "images in [-1, 1] (before the pipelines' /2 + 0.5)",
        },
    )
    return vaes


class RecordingVAE(torch.nn.Module):
    """The real VAE, recording what the pipeline hands to ``decode``."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.decoded: list[torch.Tensor] = []

    @property
    def config(self):
        return self.vae.config

    @property
    def device(self):
        return self.vae.device

    def decode(self, latents):
        self.decoded.append(latents.clone())
        return self.vae.decode(latents)


@torch.no_grad()
def pipeline_fixture(latent_model: DiTTransformer2DModel, vae: AutoencoderKL) -> dict:
    folder = OUT / "dit_pipeline"
    shutil.rmtree(folder, ignore_errors=True)
    DiTPipeline(transformer=latent_model, vae=vae, scheduler=DPMSolverMultistepScheduler()).save_pretrained(
        folder, safe_serialization=True
    )
    class_labels, seed, steps, guidance = [2, 7], 5, 12, 4.0
    scheduler = DPMSolverMultistepScheduler.from_pretrained(folder / "scheduler")
    recording = RecordingVAE(vae)
    pipe = DiTPipeline(transformer=NullClassRemap(latent_model), vae=recording, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        class_labels=class_labels,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        output_type="np",
    ).images
    assert len(recording.decoded) == 1
    tensors = {
        "noise": make_noise((2, 4, 8, 8), seed),
        "class_labels": torch.tensor(class_labels, dtype=torch.int64),
        # what left the denoise loop: the decoder got 1 / scaling_factor times this
        "latents": recording.decoded[0] * vae.config.scaling_factor,
        "decoder_input": recording.decoded[0],
        "image": torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32),
    }
    meta = {
        "pipeline": "dit_pipeline",
        "num_inference_steps": str(steps),
        "seed": str(seed),
        "guidance_scale": repr(guidance),
        "class_labels": json.dumps(class_labels),
        "produced_by": "diffusers.DiTPipeline with its AutoencoderKL, output_type='np'",
        "image": "[B, H, W, 3] in [0, 1]: (decode / 2 + 0.5).clamp(0, 1)",
    }
    write_safetensors(OUT / "sample_dit_pipeline.safetensors", tensors, meta)
    return meta


def main() -> None:
    assert sys.byteorder == "little", "safetensors data must be little-endian"
    setup_determinism()
    OUT.mkdir(parents=True, exist_ok=True)
    for sub in ["dit_pixel", "dit_pixel_bin", "dit_latent"]:
        shutil.rmtree(OUT / sub, ignore_errors=True)

    pixel, latent = save_models()
    model_specs = [
        ("dit_pixel", PIXEL_WEIGHT_SEED, PIXEL_CONFIG),
        ("dit_pixel_bin", PIXEL_WEIGHT_SEED, PIXEL_CONFIG),
        ("dit_latent", LATENT_WEIGHT_SEED, LATENT_CONFIG),
    ]

    forward_specs = [
        ("forward_pixel.safetensors", pixel, [2, 3, 16, 16], [999.0, 17.0], [3, 10],
         "x [2,3,16,16], timestep [999, 17], class_labels [3, 10] (10 = null class)"),
        ("forward_pixel_24.safetensors", pixel, [2, 3, 24, 24], [500.0, 0.0], [0, 9],
         "non-native size x [2,3,24,24] (6x6 patch grid, position embedding recomputed), "
         "timestep [500, 0], class_labels [0, 9]"),
        ("forward_pixel_frac.safetensors", pixel, [1, 3, 16, 16], [123.456], [5],
         "x [1,3,16,16], fractional timestep [123.456] (float32), class_labels [5]"),
        ("forward_latent.safetensors", latent, [2, 4, 8, 8], [250.0, 750.0], [1, 10],
         "x [2,4,8,8], timestep [250, 750], class_labels [1, 10]"),
    ]
    for name, model, shape, t, labels, _ in forward_specs:
        tensors = forward_fixture(model, name, shape, t, labels)
        print(f"{name}: max|out| = {tensors['out'].abs().max().item()!r}")

    dit_note = "Real DiTPipeline (initial latents = unscaled noise; init_noise_sigma is 1 here anyway)."
    euler_note = (
        "Own loop, identical to DiTPipeline's CFG code except that the initial latents are "
        "`noise * init_noise_sigma` (as standard diffusers pipelines do; DiTPipeline omits it) and "
        "`scale_model_input` output is fed to the model only, while `scheduler.step` gets the unscaled "
        "latents (as StableDiffusionPipeline does)."
    )
    euler_literal_note = (
        "Own loop that copies DiTPipeline literally (scale_model_input output replaces the latents and is "
        "what `scheduler.step` receives) but with initial latents `noise * init_noise_sigma`. DiTPipeline's "
        "own Euler behaviour; kept for comparison, `sample_euler_pixel` is the correct Euler sampler."
    )
    sampling_specs = [
        ("sample_dpm_pixel.safetensors", pixel, DPMSolverMultistepScheduler,
         dict(steps=25, seed=0, class_labels=[3], guidance_scale=4.0, use_pipeline=True, notes=dit_note,
              scale_init_noise=False, step_on_scaled_input=True)),
        ("sample_ddim_pixel.safetensors", pixel, lambda: DDIMScheduler(clip_sample=False),
         dict(steps=25, seed=1, class_labels=[7], guidance_scale=4.0, use_pipeline=True, notes=dit_note,
              scale_init_noise=False, step_on_scaled_input=True)),
        ("sample_euler_pixel.safetensors", pixel, EulerDiscreteScheduler,
         dict(steps=25, seed=2, class_labels=[1], guidance_scale=4.0, use_pipeline=False, notes=euler_note,
              scale_init_noise=True, step_on_scaled_input=False)),
        ("sample_euler_pixel_ditloop.safetensors", pixel, EulerDiscreteScheduler,
         dict(steps=25, seed=2, class_labels=[1], guidance_scale=4.0, use_pipeline=False,
              notes=euler_literal_note, scale_init_noise=True, step_on_scaled_input=True)),
        ("sample_dpm_latent_nocfg.safetensors", latent, DPMSolverMultistepScheduler,
         dict(steps=10, seed=3, class_labels=[4, 2], guidance_scale=1.0, use_pipeline=True,
              notes="Real DiTPipeline without guidance (guidance_scale 1.0: single batch, no null class).",
              scale_init_noise=False, step_on_scaled_input=True)),
    ]
    written_sampling = []
    for name, model, factory, kwargs in sampling_specs:
        tensors, meta = sampling_fixture(name, model, factory, **kwargs)
        written_sampling.append((name, meta))
        print(f"{name}: max|sample| = {tensors['sample'].abs().max().item()!r}")

    # Euler sanity check: with a trivial loop the real pipeline (which skips init_noise_sigma)
    # must equal our literal copy with scale_init_noise=False.
    ref = run_dit_pipeline(pixel, EulerDiscreteScheduler(), [1], 4.0, 25, 2)
    mine = dit_cfg_loop(pixel, EulerDiscreteScheduler(), make_noise((1, 3, 16, 16), 2), [1], 4.0, 25,
                        scale_init_noise=False, step_on_scaled_input=True)[0]
    assert torch.equal(ref["sample"], mine), "literal DiTPipeline copy disagrees with DiTPipeline for Euler"

    vaes = vae_fixtures()
    pipeline_meta = pipeline_fixture(latent, vaes["vae_4"])
    print(f"sample_dit_pipeline.safetensors: {pipeline_meta['produced_by']}")

    with open(OUT / "schedulers.json", "w") as f:
        # Strict JSON: non-finite config values (e.g. lambda_min_clipped = -inf) become strings.
        json.dump(json_safe(scheduler_tables()), f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")

    write_readme(
        [(n, model_dir_for(m), d) for n, m, _, _, _, d in forward_specs],
        written_sampling,
        model_specs,
        float64_drift(forward_specs, sampling_specs),
    )

    vae_rows = "\n".join(
        f"| `{name}/` | `{json.dumps(cfg)}` | {', '.join(sorted(os.listdir(OUT / name)))} |"
        for name, cfg in VAE_CONFIGS.items()
    )
    pipeline_files = ", ".join(
        str(p.relative_to(OUT / "dit_pipeline")) for p in sorted((OUT / "dit_pipeline").rglob("*")) if p.is_file()
    )
    with open(OUT / "README.md", "a") as f:
        f.write(
            "\n## VAE and a whole pipeline\n\n"
            f"| folder | AutoencoderKL config | files |\n|---|---|---|\n{vae_rows}\n\n"
            f"### `vae_decode.safetensors` ({size_of(OUT / 'vae_decode.safetensors')})\n\n"
            "Seeded latents and `AutoencoderKL.decode(unscale(latents)).sample` for each VAE: "
            "`<vae>.latents` [2, C, 8, 8] → `<vae>.decoded`; `<vae>.large_latents` [1, C, 12, 10] → "
            "`<vae>.untiled_large` and `<vae>.tiled_large` (after `enable_tiling()`: 8-latent tiles "
            "every 6, blended over 4 pixels). `unscale` is `1 / scaling_factor * z` (DiT, SD) or "
            "`z / scaling_factor + shift_factor` (FLUX).\n\n"
            f"{describe_tensors(OUT / 'vae_decode.safetensors')}\n\n"
            f"### `dit_pipeline/` and `sample_dit_pipeline.safetensors` ({size_of(OUT / 'sample_dit_pipeline.safetensors')})\n\n"
            f"The folder `DiTPipeline.save_pretrained` wrote ({pipeline_files}): `transformer/` is "
            "`dit_latent`, `vae/` is `vae_4`, `scheduler/` DPM-Solver++ defaults. The real pipeline ran on it "
            "(null class remapped as above), classes [2, 7], seed 5, 12 steps, guidance 4, output_type 'np'.\n\n"
            f"{describe_tensors(OUT / 'sample_dit_pipeline.safetensors')}\n"
        )

    # Only what this script writes (cache_traces/ and schedulers/ come from other scripts).
    others = {"cache_traces", "schedulers"}
    total = sum(
        p.stat().st_size
        for p in OUT.rglob("*")
        if p.is_file() and p.relative_to(OUT).parts[0] not in others
    )
    print(f"total fixture size: {total:,} bytes")
    assert total < 3 * 1024 * 1024


if __name__ == "__main__":
    main()
