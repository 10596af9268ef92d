"""Traces of diffusers' First Block Cache (``FirstBlockCacheConfig``, diffusers 0.42.1
``hooks/first_block_cache.py``) for the project's FBCache parity test.

It runs the real hook on the models the other parity fixtures use and records, per
transformer call, what the hook decided and the relative-L1 diff it measured (read by wrapping
``FBCHeadBlockHook._should_compute_remaining_blocks``, which the hook itself calls), and the
final latents:

* ``trace_dit`` (``nodes/tests/fixtures/cache_traces/trace_dit``, the 12-block seeded DiT of
  ``tools/make_cache_traces.py``), 25 DPM-Solver++ steps, batched CFG 4, class 3, seed 7, through
  ``DiTTracePipeline`` (one call per step, so one hook state, as diffusers' DiT pipeline has);
* the tiny ``FluxPipeline`` of ``tools/make_flux_fixtures.py``, 12 steps, guidance 3.5, 16 T5
  tokens, 16×16 px, the fixture's prompt and a seeded starting latent (``FluxPipeline`` wraps
  each call in ``cache_context("cond")``).

Thresholds: 0 (reuses only an exactly equal residual), three that reuse some steps, and one
that reuses most. Output: ``nodes/tests/fixtures/fbcache_traces.safetensors`` (final latents;
the decisions and diffs as JSON metadata). Run from the repository root with the fixture venv:
``/work/.fixvenv/bin/python tools/make_fbcache_traces.py``. CPU, float32, one thread.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import diffusers  # noqa: E402
from diffusers import FirstBlockCacheConfig, FluxPipeline  # noqa: E402
from diffusers.hooks.hooks import CacheContext, _set_cache_context  # noqa: E402
from diffusers.hooks import first_block_cache as fbc  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import make_cache_traces as traces  # noqa: E402

OUT = ROOT / "nodes" / "tests" / "fixtures" / "fbcache_traces.safetensors"
FLUX = ROOT / "nodes" / "tests" / "fixtures" / "flux_pipeline"

# Every call of the head hook appends (should_compute, diff or None).
CALLS: list[tuple[bool, float | None]] = []
_original = fbc.FBCHeadBlockHook._should_compute_remaining_blocks


def _recording(self, hidden_states_residual):
    state = self.state_manager.get_state()
    diff = None
    if state.head_block_residual is not None:
        prev = state.head_block_residual
        diff = ((hidden_states_residual - prev).abs().mean() / prev.abs().mean()).item()
    decision = _original(self, hidden_states_residual)
    CALLS.append((bool(decision), diff))
    return decision


fbc.FBCHeadBlockHook._should_compute_remaining_blocks = _recording


def setup() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def dit_run(threshold: float | None):
    run = traces.BASE_RUN
    model = traces.load_model("trace_dit", torch.float32)
    if threshold is not None:
        # DiTTransformer2DModel has no CacheMixin: apply the hook as enable_cache would.
        fbc.apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
        # One context for every call (one call per step), as CacheMixin.cache_context sets it.
        _set_cache_context(model, CacheContext("inference"))
    pipe = traces.DiTTracePipeline(transformer=model, scheduler=traces.SCHEDULERS[run["scheduler"]]())
    pipe.set_progress_bar_config(disable=True)
    noise = traces.noise_for(model.config, run["seed"])
    CALLS.clear()
    latents = pipe(noise, run["class_label"], run["guidance"], run["steps"])
    return latents, list(CALLS), noise


@torch.no_grad()
def flux_run(threshold: float | None, latents_init: torch.Tensor, prompt: str):
    pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if threshold is not None:
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    CALLS.clear()
    out = pipe(
        prompt,
        height=16,
        width=16,
        num_inference_steps=12,
        guidance_scale=3.5,
        max_sequence_length=16,
        latents=latents_init,
        output_type="latent",
    ).images
    return out, list(CALLS)


def main() -> None:
    setup()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {
        "produced_by": "tools/make_fbcache_traces.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "rule": "compute iff diff > threshold (equal reuses); the reference is the head residual "
        "of the last computed call; no warmup, no limits; the first call computes",
    }
    runs = []
    base, _, noise = dit_run(None)
    tensors["dit_noise"] = noise
    tensors["dit_uncached"] = base
    for thr in [0.0, 0.03, 0.05, 0.1, 0.2]:
        latents, calls = dit_run(thr)[:2]
        key = f"dit_{thr}"
        tensors[key] = latents
        runs.append(dict(model="trace_dit", threshold=thr, latents=key, calls=calls, run=traces.BASE_RUN))
    prompt = json.loads(
        __import__("safetensors").safe_open(str(FLUX.parent / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"]
    )
    init = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(7700), dtype=torch.float32)
    packed = FluxPipeline._pack_latents(init, 1, 16, 8, 8)
    tensors["flux_noise"] = init
    tensors["flux_uncached"] = flux_run(None, packed, prompt)[0]
    for thr in [0.0, 0.2, 0.35, 0.5, 1.0]:
        latents, calls = flux_run(thr, packed, prompt)
        key = f"flux_{thr}"
        tensors[key] = latents
        runs.append(dict(model="flux_pipeline", threshold=thr, latents=key, calls=calls, prompt=prompt))
    for r in runs:
        reused = [i for i, (compute, _) in enumerate(r["calls"]) if not compute]
        print(f"{r['model']} thr {r['threshold']}: reused calls {reused}")
    meta["runs"] = json.dumps(runs)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
