"""Traces of diffusers' FasterCache (``FasterCacheConfig`` / ``apply_faster_cache``, diffusers
0.42.1 ``hooks/faster_cache.py``) for the project's FasterCache parity test.

It runs the real hooks (the denoiser-level CFG-Cache hook and the per-attention hook) on:

* ``trace_dit`` (``nodes/tests/fixtures/cache_traces/trace_dit``, the 12-block seeded DiT of
  ``tools/make_cache_traces.py``), 25 DPM-Solver++ steps, batched CFG 4, class 3, seed 7 (the
  BASE_RUN settings), through ``TimestepDiTPipeline`` of ``tools/make_pab_traces.py`` with
  ``uncond_first=True``: FasterCache assumes the batch is ``[uncond; cond]``, so this variant
  of ``DiTTracePipeline`` batches the null class first (labels ``[10, 3]``); the guidance
  formula ``eps_u + 4 (eps_c - eps_u)`` is unchanged. It sets ``current_timestep`` (the
  scheduler timestep, int64 999 … 40) before each call; the hooks' callback reads it.
  ``tensor_format="BCHW"``. The DiT pipeline passes the latents positionally (the hook halves
  every positional tensor) and ``timestep`` / ``class_labels`` as kwargs;
  ``class_labels`` is not in FasterCache's default
  ``_unconditional_conditional_input_kwargs_identifiers``, so every DiT config here sets that
  field to the default tuple plus ``"class_labels"`` (without it the skipped-uncond call would
  feed one latent with two labels). The FFT split runs on the whole model output (all 6
  channels, learned sigma included); the pipeline then uses the first 3.
* the tiny ``FluxPipeline`` of ``tools/make_flux_fixtures.py`` (12 steps, guidance 3.5,
  16×16 px, 16 T5 tokens, the prompt of ``flux_golden.safetensors``, a seeded packed latent),
  as ``tools/make_magcache_traces.py`` runs it, with ``is_guidance_distilled=True``: the
  denoiser hook only counts, the attention hooks (``transformer_blocks.{0,1}.attn``, tuple
  output; ``single_transformer_blocks.{0,1}.attn``, tensor output) extrapolate.

Per transformer call it records the callback's timestep, whether the unconditional half was
skipped (the denoiser hook's original forward ran on half the batch), the low/high frequency
weights the hook's callbacks returned (only called on skipped calls), and per hooked attention
module, in the order the hooks ran, whether it computed (its original forward ran) or was
approximated; per run the final latents; for the default DiT run the model output (after the
hook, ``[uncond; cond]``, 6 channels) of a few calls around the first skipped ones, so that
the FFT reconstruction can be checked directly (this script re-derives those uncond halves
from the saved tensors and asserts it). Output:
``nodes/tests/fixtures/fastercache_traces.safetensors`` (float32; runs as JSON metadata, format
in ``/work/notes/pab_fastercache.md``). Run from the repository root with the fixture venv:
``/work/.fixvenv/bin/python tools/make_fastercache_traces.py``. CPU, float32, one thread,
deterministic (byte-identical output on rerun).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import diffusers  # noqa: E402
from diffusers import FasterCacheConfig, FluxPipeline  # noqa: E402
from diffusers.hooks import faster_cache as fc  # noqa: E402
from diffusers.hooks.hooks import HookRegistry  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors import safe_open  # noqa: E402

import make_cache_traces as traces  # noqa: E402
from make_fixtures import write_safetensors  # noqa: E402
from make_pab_traces import CALLS, TimestepDiTPipeline, instrument, record_calls, setup  # noqa: E402

FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "fastercache_traces.safetensors"
FLUX_SEED = 8200
DIT_KWARGS_IDENTIFIERS = (*fc._UNCOND_COND_INPUT_KWARGS_IDENTIFIERS, "class_labels")
# Calls of the default DiT run whose model output is saved (computed 8, skipped 9, computed 10,
# skipped 11 and 12 (weights compound), computed 20, skipped 21 and 22 (high weight applies)).
SAVED_OUTPUT_CALLS = (8, 9, 10, 11, 12, 20, 21, 22)

OUTPUTS: list[torch.Tensor] = []


def instrument_denoiser(transformer: torch.nn.Module) -> None:
    """Per call: ``uncond_skipped`` (the model ran on fewer rows than the call was given) and
    the weights returned by the hook's low/high frequency callbacks (None when not called)."""
    hook = transformer._diffusers_hook.get_hook(fc._FASTER_CACHE_DENOISER_HOOK)
    original = hook.fn_ref.original_forward
    low, high = hook.low_frequency_weight_callback, hook.high_frequency_weight_callback

    def batch_of(args, kwargs):
        tensors = [a for a in args if torch.is_tensor(a)]
        return (tensors[0] if tensors else kwargs["hidden_states"]).size(0)

    def original_forward(*args, **kwargs):
        CALLS[-1]["model_batch"] = batch_of(args, kwargs)
        CALLS[-1]["uncond_skipped"] = CALLS[-1]["model_batch"] < CALLS[-1]["batch"]
        return original(*args, **kwargs)

    def low_weight(module):
        CALLS[-1]["w_low"] = float(low(module))
        return CALLS[-1]["w_low"]

    def high_weight(module):
        CALLS[-1]["w_high"] = float(high(module))
        return CALLS[-1]["w_high"]

    hook.fn_ref.original_forward = original_forward
    hook.low_frequency_weight_callback = low_weight
    hook.high_frequency_weight_callback = high_weight

    def pre(_module, args, kwargs):
        CALLS[-1].update(batch=batch_of(args, kwargs), w_low=None, w_high=None)

    def post(_module, _args, output):
        OUTPUTS.append((output.sample if hasattr(output, "sample") else output[0]).detach().clone())

    transformer.register_forward_pre_hook(pre, with_kwargs=True)
    transformer.register_forward_hook(post)


def config_json(cfg: FasterCacheConfig, attention_weight: float) -> dict:
    return dict(
        spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
        temporal_attention_block_skip_range=cfg.temporal_attention_block_skip_range,
        spatial_attention_timestep_skip_range=list(cfg.spatial_attention_timestep_skip_range),
        temporal_attention_timestep_skip_range=list(cfg.temporal_attention_timestep_skip_range),
        low_frequency_weight_update_timestep_range=list(cfg.low_frequency_weight_update_timestep_range),
        high_frequency_weight_update_timestep_range=list(cfg.high_frequency_weight_update_timestep_range),
        alpha_low_frequency=cfg.alpha_low_frequency,
        alpha_high_frequency=cfg.alpha_high_frequency,
        unconditional_batch_skip_range=cfg.unconditional_batch_skip_range,
        unconditional_batch_timestep_skip_range=list(cfg.unconditional_batch_timestep_skip_range),
        spatial_attention_block_identifiers=list(cfg.spatial_attention_block_identifiers),
        temporal_attention_block_identifiers=list(cfg.temporal_attention_block_identifiers),
        attention_weight=attention_weight,
        tensor_format=cfg.tensor_format,
        is_guidance_distilled=cfg.is_guidance_distilled,
        unconditional_conditional_input_kwargs_identifiers=list(cfg._unconditional_conditional_input_kwargs_identifiers),
    )


def make_config(kwargs: dict, timestep, **fixed) -> tuple[FasterCacheConfig, float]:
    kwargs = dict(kwargs)
    weight = kwargs.pop("attention_weight", 0.5)  # diffusers' default callback returns 0.5
    cfg = FasterCacheConfig(**kwargs, **fixed, attention_weight_callback=lambda _module: weight,
                            current_timestep_callback=timestep)
    return cfg, weight


def summary(calls: list[dict]) -> dict:
    attn = [computed for c in calls for _, computed in c["attn"]]
    return dict(
        transformer_calls=len(calls),
        uncond_skipped_calls=sum(1 for c in calls if c["uncond_skipped"]),
        module_calls=len(attn),
        approximated_module_calls=sum(1 for computed in attn if not computed),
    )


@torch.no_grad()
def dit_run(kwargs: dict | None):
    run = traces.BASE_RUN
    model = traces.load_model("trace_dit", torch.float32)
    pipe = TimestepDiTPipeline(transformer=model, scheduler=traces.SCHEDULERS[run["scheduler"]]())
    pipe.set_progress_bar_config(disable=True)
    cfg = weight = None
    names: list[str] = []
    record_calls(model, lambda: pipe.current_timestep)
    if kwargs is not None:
        cfg, weight = make_config(kwargs, lambda: pipe.current_timestep, tensor_format="BCHW",
                                  _unconditional_conditional_input_kwargs_identifiers=DIT_KWARGS_IDENTIFIERS)
        # DiTTransformer2DModel has no CacheMixin: apply the hooks as enable_cache would.
        fc.apply_faster_cache(model, cfg)
        names = instrument(model, fc._FASTER_CACHE_BLOCK_HOOK)
        instrument_denoiser(model)
    noise = traces.noise_for(model.config, run["seed"])
    CALLS.clear()
    OUTPUTS.clear()
    latents = pipe(noise, run["class_label"], run["guidance"], run["steps"], uncond_first=True)
    return latents, list(CALLS), list(OUTPUTS), names, cfg, weight, noise


@torch.no_grad()
def flux_run(kwargs: dict | None, packed: torch.Tensor, prompt: str):
    pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    cfg = weight = None
    names: list[str] = []
    record_calls(pipe.transformer, lambda: pipe.current_timestep)
    if kwargs is not None:
        cfg, weight = make_config(kwargs, lambda: pipe.current_timestep, is_guidance_distilled=True)
        pipe.transformer.enable_cache(cfg)
        names = instrument(pipe.transformer, fc._FASTER_CACHE_BLOCK_HOOK)
        instrument_denoiser(pipe.transformer)
    CALLS.clear()
    OUTPUTS.clear()
    out = pipe(prompt, height=16, width=16, num_inference_steps=12, guidance_scale=3.5,
               max_sequence_length=16, latents=packed, output_type="latent").images
    return out, list(CALLS), names, cfg, weight


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent re-implementation of the hook's ``_split_low_high_freq`` (BCHW)."""
    spec = torch.fft.fftshift(torch.fft.fft2(x.float()))  # shifts every dim, B and C included
    h, w = x.shape[-2:]
    r = min(h, w) // 5
    y = torch.arange(h)[:, None]
    xx = torch.arange(w)[None, :]
    mask = (xx - w // 2) ** 2 + (y - h // 2) ** 2 <= r * r
    return spec * mask, spec * ~mask


def check_reconstruction(outputs: dict[int, torch.Tensor], calls: list[dict]) -> float:
    """Rebuilds the uncond half of every saved skipped call from the saved tensors."""
    worst = 0.0
    d_low = d_high = None
    for i in range(max(outputs) + 1):
        c = calls[i]
        if not c["uncond_skipped"]:
            if i in outputs:
                lu, hu = split(outputs[i][:1])
                lc, hc = split(outputs[i][1:])
                d_low, d_high = lu - lc, hu - hc
            else:
                d_low = d_high = None
            continue
        if d_low is None:
            continue
        d_low, d_high = d_low * c["w_low"], d_high * c["w_high"]
        if i in outputs:
            lc, hc = split(outputs[i][1:])
            uncond = torch.fft.ifft2(torch.fft.ifftshift((d_low + lc) + (d_high + hc))).real
            worst = max(worst, (uncond - outputs[i][:1]).abs().max().item())
    return worst


def main() -> None:
    setup()
    tensors: dict[str, torch.Tensor] = {}
    runs: list[dict] = []

    # ---- trace DiT (batched CFG, [uncond; cond]) ---------------------------------------------
    base, calls, _, _, _, _, noise = dit_run(None)
    tensors["dit_noise"] = noise
    tensors["dit_uncached"] = base
    dit_timesteps = [c["t"] for c in calls]
    dit_cases = [
        ("dit_default", "diffusers' defaults (uncond N=5 in (-1, 641), attention N=2 in (-1, 681), "
         "alpha 1.1 low in (99, 901) / high in (-1, 301), attention weight 0.5)", dict()),
        ("dit_U2_wide", "uncond N=2 and attention N=2, both windows (-1, 1000) (t = 999 inside; "
         "iteration 0 still computes)", dict(unconditional_batch_skip_range=2,
         unconditional_batch_timestep_skip_range=(-1, 1000), spatial_attention_timestep_skip_range=(-1, 1000))),
        ("dit_U3_A2", "uncond N=3 in (-1, 800), attention N=2 in (200, 700): attention computes on "
         "cond-only batches at even iterations", dict(unconditional_batch_skip_range=3,
         unconditional_batch_timestep_skip_range=(-1, 800), spatial_attention_timestep_skip_range=(200, 700))),
        ("dit_U4_alpha", "uncond N=4 in (-1, 900), attention N=3 in (-1, 900), alpha low 1.3 in "
         "(500, 1000), alpha high 0.8 in (-1, 400), attention weight 0.3",
         dict(unconditional_batch_skip_range=4, unconditional_batch_timestep_skip_range=(-1, 900),
              spatial_attention_block_skip_range=3, spatial_attention_timestep_skip_range=(-1, 900),
              alpha_low_frequency=1.3, low_frequency_weight_update_timestep_range=(500, 1000),
              alpha_high_frequency=0.8, high_frequency_weight_update_timestep_range=(-1, 400),
              attention_weight=0.3)),
        ("dit_exclusive", "every bound is the timestep of a call where it decides, and is excluded: uncond "
         "N=3 in (80, 599) (calls 10, 23 compute), attention N=2 in (240, 559) (calls 11, 19 compute), "
         "low in (120, 480) (calls 13, 22 get 1.0), high in (-1, 200) (call 20 gets 1.0)",
         dict(unconditional_batch_skip_range=3, unconditional_batch_timestep_skip_range=(80, 599),
              spatial_attention_timestep_skip_range=(240, 559),
              low_frequency_weight_update_timestep_range=(120, 480),
              high_frequency_weight_update_timestep_range=(-1, 200))),
        ("dit_cfg_only", "spatial_attention_block_skip_range=None: no attention hook, only the "
         "CFG-Cache; uncond N=2 in (-1, 800)", dict(spatial_attention_block_skip_range=None,
         unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 800))),
    ]
    for key, note, kwargs in dit_cases:
        latents, calls, outputs, names, cfg, weight, _ = dit_run(kwargs)
        assert [c["t"] for c in calls] == dit_timesteps
        if key == "dit_exclusive":  # the bounds themselves are outside their windows
            assert not calls[10]["uncond_skipped"] and not calls[23]["uncond_skipped"]
            assert all(calls[i]["uncond_skipped"] and all(c for _, c in calls[i]["attn"]) for i in (11, 19))
            assert calls[13]["w_low"] == calls[22]["w_low"] == calls[20]["w_high"] == 1.0
        tensors[key] = latents
        record = dict(name=key, note=note, model="trace_dit", run=traces.BASE_RUN, batch_order="uncond_first",
                      noise="dit_noise", uncached="dit_uncached", latents=key, config=config_json(cfg, weight),
                      hooked=names, **summary(calls), calls=calls)
        if key == "dit_default":
            saved = {i: outputs[i] for i in SAVED_OUTPUT_CALLS}
            for i, out in saved.items():
                tensors[f"{key}/output/{i}"] = out
            record["outputs"] = {str(i): f"{key}/output/{i}" for i in SAVED_OUTPUT_CALLS}
            err = check_reconstruction(saved, calls)
            print(f"FFT reconstruction of the saved uncond halves: max |err| {err:.3g}")
            assert err < 1e-5, err
        runs.append(record)

    # ---- FLUX (guidance-distilled) ---------------------------------------------------------
    prompt = json.loads(safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"])
    init = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(FLUX_SEED), dtype=torch.float32)
    packed = FluxPipeline._pack_latents(init, 1, 16, 8, 8)
    tensors["flux_noise"] = init
    base, calls, _, _, _ = flux_run(None, packed, prompt)
    tensors["flux_uncached"] = base
    flux_timesteps = [c["t"] for c in calls]
    flux_cases = [
        ("flux_default", "defaults, is_guidance_distilled: attention N=2 in (-1, 681)", dict()),
        ("flux_N3_wide", "attention N=3 in (-1, 1000): t = 1000 excluded, so call 0 computes",
         dict(spatial_attention_block_skip_range=3, spatial_attention_timestep_skip_range=(-1, 1000))),
        ("flux_N2_w1", "attention N=2 in (100, 950), attention weight 1.0",
         dict(spatial_attention_timestep_skip_range=(100, 950), attention_weight=1.0)),
        ("flux_N4_w0", "attention N=4 in (-1, 1000), attention weight 0 (plain reuse of the last output)",
         dict(spatial_attention_block_skip_range=4, spatial_attention_timestep_skip_range=(-1, 1000),
              attention_weight=0.0)),
    ]
    for key, note, kwargs in flux_cases:
        latents, calls, names, cfg, weight = flux_run(kwargs, packed, prompt)
        assert [c["t"] for c in calls] == flux_timesteps
        tensors[key] = latents
        runs.append(dict(name=key, note=note, model="flux_pipeline", prompt=prompt, steps=12, guidance=3.5,
                         height=16, width=16, max_sequence_length=16, noise="flux_noise", uncached="flux_uncached",
                         latents=key, config=config_json(cfg, weight), hooked=names, **summary(calls), calls=calls))
    # A first call inside the attention window: the distilled hook indexes an empty cache.
    try:
        flux_run(dict(spatial_attention_timestep_skip_range=(-1, 1001)), packed, prompt)
        rejected = None
    except Exception as err:  # noqa: BLE001 - recorded as what diffusers does
        rejected = f"{type(err).__name__}: {err}"
    assert rejected is not None
    runs.append(dict(name="flux_first_in_window", note="attention window (-1, 1001) holds t = 1000: call 0 "
                     "is to be approximated with no cache and diffusers raises", model="flux_pipeline",
                     prompt=prompt, noise="flux_noise", rejected=rejected))

    for run in runs:
        if "rejected" in run:
            print(f"{run['name']:16s} rejected: {run['rejected']}")
            continue
        skipped = [i for i, c in enumerate(run["calls"]) if c["uncond_skipped"]]
        print(f"{run['name']:16s} uncond skipped {run['uncond_skipped_calls']:2d}/{run['transformer_calls']} "
              f"{skipped}, attention approximated {run['approximated_module_calls']:3d}/{run['module_calls']}")
    meta = {
        "produced_by": "tools/make_fastercache_traces.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "dit_timesteps": json.dumps(dit_timesteps),
        "flux_timesteps": json.dumps(flux_timesteps),
        "runs": json.dumps(runs),
    }
    write_safetensors(OUT, {k: v.contiguous().to(torch.float32) for k, v in tensors.items()}, meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
