"""Traces of diffusers' MagCache (``MagCacheConfig``, diffusers 0.42.1 ``hooks/mag_cache.py``)
for the project's MagCache parity test.

For the 12-block trace DiT (25 DPM-Solver++ steps, batched CFG; ``tools/make_cache_traces.py``)
and the tiny FluxPipeline fixture (12 steps; ``tools/make_flux_fixtures.py``) it runs the real
hook in calibration mode (recording the ratios it computes) and then with those ratios (and,
for FLUX, diffusers' ``FLUX_MAG_RATIOS`` resampled to 12 steps) at several thresholds,
``max_skip_steps`` and ``retention_ratio`` values. Per call it records whether the head hook
computed (read from the hook's own state after it ran). Output:
``nodes/tests/fixtures/magcache_traces.safetensors`` (final latents; runs as JSON metadata).
Run from the repository root: ``/work/.fixvenv/bin/python tools/make_magcache_traces.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import diffusers  # noqa: E402
from diffusers import FluxPipeline  # noqa: E402
from diffusers.hooks import mag_cache as mc  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import make_cache_traces as traces  # noqa: E402

FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "magcache_traces.safetensors"

DECISIONS: list[bool] = []
RATIOS: list[float] = []
_head = mc.MagCacheHeadHook.new_forward
_calibrate = mc.MagCacheBlockHook._perform_calibration_step


def _recording_head(self, module, *args, **kwargs):
    out = _head(self, module, *args, **kwargs)
    DECISIONS.append(bool(self.state_manager.get_state().should_compute))
    return out


def _recording_calibration(self, state, residual):
    _calibrate(self, state, residual)
    RATIOS.append(float(state.calibration_ratios[-1]))


mc.MagCacheHeadHook.new_forward = _recording_head
mc.MagCacheBlockHook._perform_calibration_step = _recording_calibration


@torch.no_grad()
def dit_run(config: mc.MagCacheConfig | None):
    run = traces.BASE_RUN
    model = traces.load_model("trace_dit", torch.float32)
    if config is not None:
        mc.apply_mag_cache(model, config)
    pipe = traces.DiTTracePipeline(transformer=model, scheduler=traces.SCHEDULERS[run["scheduler"]]())
    pipe.set_progress_bar_config(disable=True)
    noise = traces.noise_for(model.config, run["seed"])
    DECISIONS.clear()
    RATIOS.clear()
    latents = pipe(noise, run["class_label"], run["guidance"], run["steps"])
    return latents, list(DECISIONS), list(RATIOS), noise


@torch.no_grad()
def flux_run(config: mc.MagCacheConfig | None, latents, prompt: str):
    pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if config is not None:
        pipe.transformer.enable_cache(config)
    DECISIONS.clear()
    RATIOS.clear()
    out = pipe(prompt, height=16, width=16, num_inference_steps=12, guidance_scale=3.5,
               max_sequence_length=16, latents=latents, output_type="latent").images
    return out, list(DECISIONS), list(RATIOS)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tensors: dict[str, torch.Tensor] = {}
    runs = []
    steps = traces.BASE_RUN["steps"]
    _, _, dit_ratios, noise = dit_run(mc.MagCacheConfig(calibrate=True, num_inference_steps=steps))
    tensors["dit_noise"] = noise
    cases = [(0.02, 3, 0.2), (0.06, 3, 0.2), (0.12, 2, 0.2), (0.3, 4, 0.1), (0.06, 3, 0.5)]
    for thr, k, keep in cases:
        cfg = mc.MagCacheConfig(threshold=thr, max_skip_steps=k, retention_ratio=keep,
                                num_inference_steps=steps, mag_ratios=dit_ratios)
        latents, decisions, _, _ = dit_run(cfg)
        key = f"dit_{thr}_{k}_{keep}"
        tensors[key] = latents
        runs.append(dict(model="trace_dit", threshold=thr, max_skip_steps=k, retention_ratio=keep,
                         ratios=dit_ratios, latents=key, computed=decisions))
    prompt = json.loads(safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"])
    init = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(7900), dtype=torch.float32)
    packed = FluxPipeline._pack_latents(init, 1, 16, 8, 8)
    tensors["flux_noise"] = init
    _, _, flux_ratios = flux_run(mc.MagCacheConfig(calibrate=True, num_inference_steps=12), packed, prompt)
    published = [float(r) for r in mc.FLUX_MAG_RATIOS.tolist()]
    for name, ratios in [("calibrated", flux_ratios), ("published", published)]:
        for thr, k, keep in [(0.06, 3, 0.2), (0.2, 2, 0.2), (0.5, 4, 0.1)]:
            cfg = mc.MagCacheConfig(threshold=thr, max_skip_steps=k, retention_ratio=keep,
                                    num_inference_steps=12, mag_ratios=ratios)
            latents, decisions, _ = flux_run(cfg, packed, prompt)
            key = f"flux_{name}_{thr}_{k}_{keep}"
            tensors[key] = latents
            runs.append(dict(model="flux_pipeline", threshold=thr, max_skip_steps=k, retention_ratio=keep,
                             ratios=ratios, ratios_name=name, latents=key, computed=decisions, prompt=prompt))
    for r in runs:
        print(r["latents"], "skipped", [i for i, c in enumerate(r["computed"]) if not c])
    meta = {
        "produced_by": "tools/make_magcache_traces.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "dit_calibration": json.dumps(dit_ratios),
        "flux_calibration": json.dumps(flux_ratios),
        "runs": json.dumps(runs),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print("dit ratios", [round(r, 4) for r in dit_ratios])
    print("flux ratios", [round(r, 4) for r in flux_ratios])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
