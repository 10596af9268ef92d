"""Traces of diffusers' Pyramid Attention Broadcast (``PyramidAttentionBroadcastConfig`` /
``apply_pyramid_attention_broadcast``, diffusers 0.42.1 ``hooks/pyramid_attention_broadcast.py``)
for the project's PAB parity test.

It runs the real hook on the models the other parity fixtures use:

* ``trace_dit`` (``nodes/tests/fixtures/cache_traces/trace_dit``, the 12-block seeded DiT of
  ``tools/make_cache_traces.py``), BASE_RUN: 25 DPM-Solver++ steps, batched CFG 4 (one call
  per step, conditional half first), class 3, seed 7. ``DiTTracePipeline`` has no
  ``current_timestep``, so ``TimestepDiTPipeline`` below runs the same batched-CFG loop and
  sets ``current_timestep`` to the scheduler timestep ``t`` (int64, 999 … 40) before each call,
  as diffusers' pipelines do; the uncached run asserts it gives exactly ``DiTTracePipeline``'s
  latents. The hooked modules are ``transformer_blocks.{0..11}.attn1`` (spatial; the DiT has
  no ``attn2``).
* the tiny ``FluxPipeline`` of ``tools/make_flux_fixtures.py`` (12 steps, guidance 3.5, 16×16
  px, 16 T5 tokens, the prompt of ``flux_golden.safetensors``, a seeded packed latent), as
  ``tools/make_magcache_traces.py`` runs it; the callback is ``pipe.current_timestep`` (the
  float32 flow-matching timestep ``sigma * 1000``, 1000 … ). Hooked modules:
  ``transformer_blocks.{0,1}.attn`` (tuple output) and ``single_transformer_blocks.{0,1}.attn``
  (tensor output). ``FluxAttention`` has no ``is_cross_attention`` attribute, so every FLUX
  attention is classified spatial: a cross-attention-only config hooks nothing (run
  ``flux_cross_only``). One run (``flux_truecfg_N2``) uses true CFG (negative prompt "",
  ``true_cfg_scale`` 2): two calls per step share one PAB state per module.

Several spatial skip ranges and timestep windows (bounds are exclusive; some runs put a bound
exactly on a timestep). Per transformer call it records the callback's timestep and, per
hooked attention module in the order the hooks ran, whether the hook computed (its original
forward ran) or returned its cache; plus, per run, the starting noise and the final latents,
and the uncached final latents. Output: ``nodes/tests/fixtures/pab_traces.safetensors`` (float32
tensors; runs as JSON metadata, format in ``/work/notes/pab_fastercache.md``). Run from the
repository root with the fixture venv:
``/work/.fixvenv/bin/python tools/make_pab_traces.py``. CPU, float32, one thread, deterministic
(byte-identical output on rerun).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import diffusers  # noqa: E402
from diffusers import FluxPipeline, PyramidAttentionBroadcastConfig  # noqa: E402
from diffusers.hooks import pyramid_attention_broadcast as pab  # noqa: E402
from diffusers.hooks.hooks import HookRegistry  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors import safe_open  # noqa: E402

import make_cache_traces as traces  # noqa: E402
from make_fixtures import write_safetensors  # noqa: E402

FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "pab_traces.safetensors"
FLUX_SEED = 8100


class TimestepDiTPipeline(traces.DiTTracePipeline):
    """``DiTTracePipeline``'s batched-CFG loop, with ``current_timestep`` set before each call.

    Identical arithmetic to ``DiTTracePipeline.__call__`` with ``separate_cfg=False`` and
    guidance > 1. ``uncond_first`` batches ``[uncond; cond]`` (labels ``[null, class]``) instead
    of ``[cond; uncond]``, for FasterCache, which assumes that order; the guidance formula is
    the same.
    """

    _current_timestep = None

    @property
    def current_timestep(self):
        return self._current_timestep

    @torch.no_grad()
    def __call__(self, latents, class_label, guidance_scale, num_inference_steps, uncond_first=False):
        assert guidance_scale > 1
        model = self.transformer
        channels = model.config.in_channels
        dtype = latents.dtype
        cond = torch.tensor([class_label])
        null = torch.tensor([model.config.num_embeds_ada_norm])
        labels = torch.cat([null, cond]) if uncond_first else torch.cat([cond, null])
        x = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            self._current_timestep = t
            inp = self.scheduler.scale_model_input(torch.cat([x, x]), t)
            ts = t[None].expand(inp.shape[0])
            out = model(inp, timestep=ts, class_labels=labels).sample[:, :channels]
            if uncond_first:
                eps_uncond, eps_cond = out.chunk(2)
            else:
                eps_cond, eps_uncond = out.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = self.scheduler.step(eps.to(dtype), t, x).prev_sample
        self._current_timestep = None
        return x


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------

# One entry per transformer call: {"t": timestep, "attn": [[module name, computed], ...]}.
CALLS: list[dict] = []


def record_calls(transformer: torch.nn.Module, timestep) -> None:
    """Opens a new CALLS entry at every transformer call (a torch pre-hook runs before the
    diffusers hooks, which replace ``forward``)."""

    def pre(_module, _args, _kwargs):
        CALLS.append(dict(t=float(timestep()), attn=[]))

    transformer.register_forward_pre_hook(pre, with_kwargs=True)


def instrument(transformer: torch.nn.Module, hook_name: str) -> list[str]:
    """Wraps every hook named ``hook_name`` so that each of its calls appends
    ``[module name, computed]`` to the current CALLS entry. ``computed`` is whether the hook
    ran the module's original forward (read from ``fn_ref.original_forward``, which the hook
    itself calls); for PAB it also checks the hook's own state (a reuse returns ``state.cache``
    unchanged). Returns the hooked module names in definition order."""
    names = []
    for name, module in transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(hook_name) if isinstance(registry, HookRegistry) else None
        if hook is None:
            continue
        names.append(name)
        ran = [False]
        original = hook.fn_ref.original_forward
        forward = hook.fn_ref.forward  # functools.partial(hook.new_forward, module)

        def original_forward(*args, _original=original, _ran=ran, **kwargs):
            _ran[0] = True
            return _original(*args, **kwargs)

        def recorded(*args, _forward=forward, _ran=ran, _name=name, _hook=hook, **kwargs):
            _ran[0] = False
            before = getattr(_hook.state, "cache", None)
            out = _forward(*args, **kwargs)
            if hook_name == pab._PYRAMID_ATTENTION_BROADCAST_HOOK:
                assert _hook.state.cache is out
                assert _ran[0] == (before is None or out is not before), _name
            CALLS[-1]["attn"].append([_name, bool(_ran[0])])
            return out

        hook.fn_ref.original_forward = original_forward
        hook.fn_ref.forward = recorded
    return names


def setup() -> None:
    assert sys.byteorder == "little"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def summary(calls: list[dict]) -> dict:
    module_calls = sum(len(c["attn"]) for c in calls)
    reused = sum(1 for c in calls for _, computed in c["attn"] if not computed)
    return dict(
        transformer_calls=len(calls),
        module_calls=module_calls,
        reused_module_calls=reused,
        calls_with_reuse=sum(1 for c in calls if any(not computed for _, computed in c["attn"])),
    )


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def config_json(cfg: PyramidAttentionBroadcastConfig | None) -> dict | None:
    if cfg is None:
        return None
    return dict(
        spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
        temporal_attention_block_skip_range=cfg.temporal_attention_block_skip_range,
        cross_attention_block_skip_range=cfg.cross_attention_block_skip_range,
        spatial_attention_timestep_skip_range=list(cfg.spatial_attention_timestep_skip_range),
        temporal_attention_timestep_skip_range=list(cfg.temporal_attention_timestep_skip_range),
        cross_attention_timestep_skip_range=list(cfg.cross_attention_timestep_skip_range),
        spatial_attention_block_identifiers=list(cfg.spatial_attention_block_identifiers),
        temporal_attention_block_identifiers=list(cfg.temporal_attention_block_identifiers),
        cross_attention_block_identifiers=list(cfg.cross_attention_block_identifiers),
    )


@torch.no_grad()
def dit_run(kwargs: dict | None):
    """kwargs: PyramidAttentionBroadcastConfig fields (None: uncached). Returns (latents, calls,
    hooked module names, the config as applied, noise)."""
    run = traces.BASE_RUN
    model = traces.load_model("trace_dit", torch.float32)
    pipe = TimestepDiTPipeline(transformer=model, scheduler=traces.SCHEDULERS[run["scheduler"]]())
    pipe.set_progress_bar_config(disable=True)
    cfg, names = None, []
    if kwargs is not None:
        cfg = PyramidAttentionBroadcastConfig(**kwargs, current_timestep_callback=lambda: pipe.current_timestep)
        # DiTTransformer2DModel has no CacheMixin: apply the hook as enable_cache would.
        pab.apply_pyramid_attention_broadcast(model, cfg)
        names = instrument(model, pab._PYRAMID_ATTENTION_BROADCAST_HOOK)
    record_calls(model, lambda: pipe.current_timestep)
    noise = traces.noise_for(model.config, run["seed"])
    CALLS.clear()
    latents = pipe(noise, run["class_label"], run["guidance"], run["steps"])
    return latents, list(CALLS), names, cfg, noise


@torch.no_grad()
def flux_run(kwargs: dict | None, packed: torch.Tensor, prompt: str, true_cfg: float = 1.0):
    pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    cfg, names = None, []
    if kwargs is not None:
        cfg = PyramidAttentionBroadcastConfig(**kwargs, current_timestep_callback=lambda: pipe.current_timestep)
        pipe.transformer.enable_cache(cfg)
        names = instrument(pipe.transformer, pab._PYRAMID_ATTENTION_BROADCAST_HOOK)
    record_calls(pipe.transformer, lambda: pipe.current_timestep)
    extra = dict(negative_prompt="", true_cfg_scale=true_cfg) if true_cfg > 1 else {}
    CALLS.clear()
    out = pipe(prompt, height=16, width=16, num_inference_steps=12, guidance_scale=3.5,
               max_sequence_length=16, latents=packed, output_type="latent", **extra).images
    return out, list(CALLS), names, cfg


def main() -> None:
    setup()
    tensors: dict[str, torch.Tensor] = {}
    runs: list[dict] = []

    # ---- trace DiT -------------------------------------------------------------------------
    base, calls, _, _, noise = dit_run(None)
    reference = traces.DiTTracePipeline(
        transformer=traces.load_model("trace_dit", torch.float32),
        scheduler=traces.SCHEDULERS[traces.BASE_RUN["scheduler"]](),
    )
    reference.set_progress_bar_config(disable=True)
    r = traces.BASE_RUN
    assert torch.equal(base, reference(noise, r["class_label"], r["guidance"], r["steps"])), "loop differs"
    tensors["dit_noise"] = noise
    tensors["dit_uncached"] = base
    dit_timesteps = [c["t"] for c in calls]
    dit_cases = [
        ("dit_N2", "spatial N=2, default window (100, 800)", dict(spatial_attention_block_skip_range=2)),
        ("dit_N3", "spatial N=3, default window", dict(spatial_attention_block_skip_range=3)),
        ("dit_N4", "spatial N=4, default window", dict(spatial_attention_block_skip_range=4)),
        ("dit_unset", "no skip range given: diffusers warns and sets spatial N=2 (same as dit_N2)", dict()),
        ("dit_N2_wide", "spatial N=2, window (-1, 1000): every timestep inside", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000))),
        ("dit_N3_wide", "spatial N=3, window (-1, 1000)", dict(spatial_attention_block_skip_range=3, spatial_attention_timestep_skip_range=(-1, 1000))),
        ("dit_N2_exclusive", "spatial N=2, window (160, 799): both bounds are timesteps of odd calls (21, 5), which are excluded and compute", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(160, 799))),
        ("dit_N2_narrow", "spatial N=2, window (400, 700)", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(400, 700))),
        ("dit_N5_narrow", "spatial N=5, window (300, 900)", dict(spatial_attention_block_skip_range=5, spatial_attention_timestep_skip_range=(300, 900))),
        ("dit_cross_only", "cross N=2 only: the DiT has no cross attention, nothing is hooked", dict(cross_attention_block_skip_range=2)),
    ]
    for key, note, kwargs in dit_cases:
        latents, calls, names, cfg, _ = dit_run(kwargs)
        assert [c["t"] for c in calls] == dit_timesteps
        if key == "dit_N2_exclusive":  # the bounds themselves are outside the window
            assert all(computed for i in (5, 21) for _, computed in calls[i]["attn"])
        tensors[key] = latents
        runs.append(dict(name=key, note=note, model="trace_dit", run=traces.BASE_RUN, noise="dit_noise",
                         uncached="dit_uncached", latents=key, config=config_json(cfg), hooked=names,
                         **summary(calls), calls=calls))

    # ---- FLUX ------------------------------------------------------------------------------
    prompt = json.loads(safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"])
    init = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(FLUX_SEED), dtype=torch.float32)
    packed = FluxPipeline._pack_latents(init, 1, 16, 8, 8)
    tensors["flux_noise"] = init
    base, calls, _, _ = flux_run(None, packed, prompt)
    tensors["flux_uncached"] = base
    flux_timesteps = [c["t"] for c in calls]
    base_cfg, calls_cfg, _, _ = flux_run(None, packed, prompt, true_cfg=2.0)
    tensors["flux_truecfg_uncached"] = base_cfg
    # A window whose bounds are exact (float32) timesteps of odd calls (9, 3): both excluded.
    lo, hi = flux_timesteps[9], flux_timesteps[3]
    flux_cases = [
        ("flux_N2", "spatial N=2, default window (100, 800)", dict(spatial_attention_block_skip_range=2), 1.0),
        ("flux_N3", "spatial N=3, default window", dict(spatial_attention_block_skip_range=3), 1.0),
        ("flux_N4", "spatial N=4, default window", dict(spatial_attention_block_skip_range=4), 1.0),
        ("flux_N2_wide", "spatial N=2, window (-1, 1001): every timestep inside (also t = 1000)", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001)), 1.0),
        ("flux_N3_wide", "spatial N=3, window (0, 1000): t = 1000 is excluded", dict(spatial_attention_block_skip_range=3, spatial_attention_timestep_skip_range=(0, 1000)), 1.0),
        ("flux_N2_exclusive", "spatial N=2, window (t[9], t[3]): float32 timesteps of odd calls as bounds, excluded (those calls compute)", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(lo, hi)), 1.0),
        ("flux_N2_narrow", "spatial N=2, window (300, 700)", dict(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(300, 700)), 1.0),
        ("flux_cross_only", "cross N=2 only: FluxAttention has no is_cross_attention, so it is never cross; nothing is hooked", dict(cross_attention_block_skip_range=2, cross_attention_timestep_skip_range=(-1, 1001)), 1.0),
        ("flux_truecfg_N2", "true CFG 2 (negative prompt \"\"): cond and uncond calls share each module's PAB state; spatial N=2, default window", dict(spatial_attention_block_skip_range=2), 2.0),
    ]
    for key, note, kwargs, true_cfg in flux_cases:
        latents, calls, names, cfg = flux_run(kwargs, packed, prompt, true_cfg)
        per_step = 2 if true_cfg > 1 else 1
        assert [c["t"] for c in calls][::per_step] == flux_timesteps
        if key == "flux_N2_exclusive":
            assert all(computed for i in (3, 9) for _, computed in calls[i]["attn"])
        tensors[key] = latents
        runs.append(dict(name=key, note=note, model="flux_pipeline", prompt=prompt, steps=12, guidance=3.5,
                         height=16, width=16, max_sequence_length=16, true_cfg_scale=true_cfg,
                         negative_prompt="" if true_cfg > 1 else None, noise="flux_noise",
                         uncached="flux_truecfg_uncached" if true_cfg > 1 else "flux_uncached",
                         latents=key, config=config_json(cfg), hooked=names, **summary(calls), calls=calls))

    for run in runs:
        print(f"{run['name']:20s} reused {run['reused_module_calls']:4d}/{run['module_calls']:4d} module calls, "
              f"{run['calls_with_reuse']:2d}/{run['transformer_calls']} calls with reuse")
    meta = {
        "produced_by": "tools/make_pab_traces.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "dit_timesteps": json.dumps(dit_timesteps),
        "flux_timesteps": json.dumps(flux_timesteps),
        "rule": "per hooked attention module, per call: compute iff cache is None or iteration == 0 or "
        "not (lo < t < hi) or iteration % N == 0; else return the cached output object; then "
        "cache = output, iteration += 1 (every call counts)",
        "runs": json.dumps(runs),
    }
    write_safetensors(OUT, {k: v.contiguous().to(torch.float32) for k, v in tensors.items()}, meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
