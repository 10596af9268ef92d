"""Traces of ComfyUI's EasyCache rule (``comfy_extras/nodes_easycache.py``, node ``EasyCache``)
run around diffusers' own models, for the project's EasyCache parity test.

EasyCache ships inside ComfyUI as model-patcher wrappers, not as a library, so this script
restates the rule (written from the ComfyUI source; see /work/notes/easycache.md for the
quoted lines) and runs it around the whole diffusion model of two diffusers pipelines:

* ``trace_dit`` (``nodes/tests/fixtures/cache_traces/trace_dit``, the 12-block seeded DiT of
  ``tools/make_cache_traces.py``): 25 DPM-Solver++ steps, batched CFG 4 ([cond; uncond] in one
  call), class 3, seed 7, through ``make_cache_traces.DiTTracePipeline``;
* the tiny ``FluxPipeline`` fixture (``nodes/tests/fixtures/flux_pipeline``), run as
  ``tools/make_magcache_traces.py`` runs it: 12 steps, guidance 3.5 (guidance-distilled, one
  call per step), 16 T5 tokens, 16×16 px, the fixture's prompt, a seeded starting latent.

The rule, per transformer call (ComfyUI's ``easycache_forward_wrapper``):

* region: past the end when ``not sigma > end_sigma`` (compute, touch no state); in the
  window when ``sigma <= start_sigma``; before the window otherwise (compute; only the
  per-branch cache diff is stored, since no "first cond" is chosen yet);
* in the window: a call whose step was already marked as skipped by the first branch reuses
  (only with separate calls); the first in-window call picks the "first cond" branch; for the
  call that holds it: ``input_change = mean|sub(x_first) - sub(x_prev)|`` (``sub`` = that
  branch's batch slice, every ``subsample``-th row and column of the last two dims), and when
  a previous output norm and a transformation rate ``k`` exist:
  ``cumulative += k * input_change / output_prev_norm``; reuse iff ``cumulative < threshold``
  (strict) and every branch has a stored diff, else ``cumulative = 0`` and compute;
* reuse returns ``x + diff[branch]`` per batch slice (``diff = output - x`` of that branch's
  last computed call); nothing else is updated. (ComfyUI up to at least Comfy-Org a125cd8,
  2025-10-11, adds *every* branch's diff to the whole batch, ``x += diff[uuid]`` in a loop; the
  later revision slices per branch, ``x[tuple(batch_slice)] += ...``. This script follows the
  later one; the two differ only for batches of several branches, i.e. the DiT runs here);
* compute: if a previous output exists, ``output_change = mean|sub(out) - sub(out_prev)|`` and,
  when ``input_change`` was measured, ``k = output_change / input_change``; every branch's
  diff is stored; for the first branch ``x_prev``, ``out_prev`` (subsampled, first-branch
  slice) and ``output_prev_norm = mean|output|`` over the **whole** batch are stored.

Reductions and the accumulation run in float32 torch ops as in ComfyUI (its state is 0-d
float32 tensors); the comparison is ``cumulative_f32 < threshold`` as torch does it.

Translation from ComfyUI's sigma space (ComfyUI runs its own samplers; here the diffusers
schedulers run and the rule only needs a sigma per call and ComfyUI's ``percent_to_sigma``):

* DiT (DDPM, epsilon): ComfyUI ``ModelSamplingDiscrete``. The model's training sigmas are
  ``sigma_i = sqrt((1 - abar_i) / abar_i)``, ``abar = cumprod(1 - betas)``, betas =
  ``linspace(1e-4, 0.02, 1000)`` in float64 (the DiT scheduler's linear betas). A call at
  diffusers timestep ``t`` (an integer) has ``sigma = sigma_t``. ``percent_to_sigma(p)``:
  ``p <= 0`` -> 999999999.9, ``p >= 1`` -> 0.0, else ``tau = (1 - p) * 999`` and
  ``exp((1 - w) * ln sigma[floor tau] + w * ln sigma[ceil tau])``, ``w = tau - floor tau``
  (float64 here; ComfyUI interpolates float32 log-sigmas). Since sigma grows strictly with
  t, ``sigma_t <= percent_to_sigma(p)`` is ``t <= (1 - p) * 999`` whenever tau is not an
  integer (true for every two-decimal p other than 0 and 1); the script asserts both forms
  agree on every call.
* DiT model input/output: ComfyUI feeds the diffusion model ``x / sqrt(sigma^2 + 1)``, which
  is the diffusers (variance-preserving) latent the DiT receives; its output is the raw model
  output, cut to the latent channels (the learned-variance channels are dropped:
  ``output[:, :latent_channels]``, as the current ComfyUI wrapper does).
* FLUX (flow matching): ComfyUI ``ModelSamplingFlux.percent_to_sigma(p)``: ``p <= 0`` -> 1.0,
  ``p >= 1`` -> 0.0, else ``exp(mu) / (exp(mu) + (1 / (1 - p) - 1))`` with ``mu`` the shift
  of the run. ComfyUI's ``ModelSamplingFlux`` node sets ``shift = (w*h / 256) * m + b``, the
  same formula as diffusers' ``calculate_shift`` that the FluxPipeline uses for its dynamic
  shifting, so ``mu`` is the pipeline's ``mu`` (0.459375 for 16 image tokens). A call's
  sigma is the timestep the pipeline hands the transformer (``t / 1000``).
* FLUX tensors: ComfyUI's Flux model takes the unpacked latent ``[B, 16, H/8, W/8]``; the
  rule works on diffusers' packed ``[B, tokens, 64]`` latents unpacked to that layout
  (``FluxPipeline._unpack_latents``; the subsampling needs it, the means do not).
* CFG branches: ComfyUI's ``uuids`` are one id per conditioning in the batch; ComfyUI
  batches ``[uncond; cond]`` (``calc_cond_batch`` reverses its batch list), so its "first
  cond" is the unconditional branch. Here the DiT batch is ``[cond; uncond]`` and the rule
  measures on the ``uncond`` half by default (``first_branch="uncond"``); one run measures
  on the ``cond`` half instead. FLUX has one branch.

Recorded per run: for every call its region, decision and the quantities above (the
``cumulative`` that is compared with the threshold, ``approx`` = its increment,
``input_change``, ``k``, ``output_prev_norm``; after a compute ``output_change`` and the new
``k``), the skipped count ComfyUI logs, and the final latents. Also the uncached run (plain
model; checked equal to a run with threshold 0) with, per step, the model input and the
latent-channel output, so the Rust side can check its probe first.

Output: ``nodes/tests/fixtures/easycache_traces.safetensors`` (tensors; everything else as
JSON metadata, ``runs`` and ``meta``). Run from the repository root:
``/work/.fixvenv/bin/python tools/make_easycache_traces.py``. CPU, float32, one thread;
running it twice gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from diffusers import FluxPipeline  # noqa: E402
from diffusers.models.modeling_outputs import Transformer2DModelOutput  # noqa: E402
from diffusers.pipelines.flux.pipeline_flux import calculate_shift  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors import safe_open  # noqa: E402

import make_cache_traces as traces  # noqa: E402
from make_fixtures import package_versions, setup_determinism, write_safetensors  # noqa: E402

FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "easycache_traces.safetensors"

FLUX_STEPS = 12
FLUX_SEED = 8000
# Decisions whose compared value lies closer than this (relative) to the threshold, or a sigma
# this close to a window boundary, would make parity depend on rounding: refuse them.
MARGIN = 1e-4


# --------------------------------------------------------------------------------------------
# Sigma space (ComfyUI's percent_to_sigma)
# --------------------------------------------------------------------------------------------


def ddpm_log_sigmas(scheduler) -> np.ndarray:
    c = scheduler.config
    assert c.beta_schedule == "linear", c.beta_schedule
    betas = np.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    return np.log(np.sqrt((1.0 - abar) / abar))


def ddpm_percent_to_sigma(p: float, log_sigmas: np.ndarray) -> float:
    if p <= 0.0:
        return 999999999.9
    if p >= 1.0:
        return 0.0
    tau = (1.0 - p) * 999.0
    lo, hi = math.floor(tau), math.ceil(tau)
    w = tau - lo
    return float(math.exp((1.0 - w) * log_sigmas[lo] + w * log_sigmas[hi]))


def flux_percent_to_sigma(p: float, mu: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    t = 1.0 - p
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def _f(t) -> float | None:
    return None if t is None else float(t)


class EasyCache:
    """The per-run state of ComfyUI's ``EasyCacheHolder`` and its forward wrapper."""

    def __init__(self, threshold: float, start_sigma: float, end_sigma: float, subsample: int = 8,
                 first_branch: str = "uncond"):
        self.threshold = threshold
        self.start_sigma = start_sigma
        self.end_sigma = end_sigma
        self.subsample_factor = subsample
        self.first_branch = first_branch
        self.k = None  # relative_transformation_rate (0-d f32 tensor)
        self.cumulative = 0.0  # cumulative_change_rate (float, then 0-d f32 tensor)
        self.initial_step = True
        self.skip_current_step = False
        self.first = None  # first_cond_uuid
        self.x_prev = None  # x_prev_subsampled
        self.out_prev = None  # output_prev_subsampled
        self.norm = None  # output_prev_norm
        self.diffs: dict[str, torch.Tensor] = {}  # uuid_cache_diffs
        self.skipped = 0  # total_steps_skipped
        self.last_sigma = None
        self.calls: list[dict] = []

    def _sub(self, t: torch.Tensor, uuids: list[str]) -> torch.Tensor:
        bo = t.shape[0] // len(uuids)
        i = uuids.index(self.first)
        s = t[i * bo:(i + 1) * bo]
        f = self.subsample_factor
        return s[..., ::f, ::f] if f > 1 else s

    def _apply(self, x: torch.Tensor, uuids: list[str]) -> torch.Tensor:
        if self.first in uuids:
            self.skipped += 1
        out = x.clone()
        bo = x.shape[0] // len(uuids)
        for i, u in enumerate(uuids):
            out[i * bo:(i + 1) * bo] += self.diffs[u]
        return out

    def _pick_first(self, uuids: list[str]) -> str:
        # ComfyUI batches [uncond; cond] and takes uuids[0]: the unconditional branch.
        if self.first_branch in uuids:
            return self.first_branch
        return uuids[0]

    @torch.no_grad()
    def call(self, sigma: float, x: torch.Tensor, uuids: list[str], run) -> torch.Tensor:
        """One diffusion-model call. ``x``, and what ``run()`` returns, are in ComfyUI's layout
        [B, C, H, W], latent channels only, the batch made of equal slices per entry of
        ``uuids``."""
        if self.last_sigma is None or sigma != self.last_sigma:
            # CALC_COND_BATCH wrapper: a new sampler step (one calc_cond_batch per step).
            self.skip_current_step = False
        self.last_sigma = sigma
        rec: dict = dict(sigma=sigma)
        self.calls.append(rec)
        if not sigma > self.end_sigma:
            rec.update(region="past_end", computed=True)
            return run()
        has_first = self.first in uuids
        input_change = None
        in_window = sigma <= self.start_sigma
        rec["region"] = "window" if in_window else "before"
        if in_window:
            can_apply = all(u in self.diffs for u in uuids)
            if self.skip_current_step and can_apply:
                rec.update(computed=False, marked=True)
                return self._apply(x, uuids)
            if self.initial_step:
                self.first = self._pick_first(uuids)
                has_first = self.first in uuids
                self.initial_step = False
            if has_first:
                if self.x_prev is not None:
                    input_change = (self._sub(x, uuids) - self.x_prev).flatten().abs().mean()
                if self.norm is not None and self.k is not None:
                    approx = (self.k * input_change) / self.norm
                    self.cumulative = self.cumulative + approx
                    rec.update(input_change=_f(input_change), k=_f(self.k), output_prev_norm=_f(self.norm),
                               approx=_f(approx), cumulative=_f(self.cumulative))
                    if bool(self.cumulative < self.threshold) and can_apply:
                        self.skip_current_step = True
                        rec["computed"] = False
                        return self._apply(x, uuids)
                    self.cumulative = 0.0
        output = run()
        rec["computed"] = True
        if input_change is not None and "input_change" not in rec:
            rec["input_change"] = _f(input_change)
        if has_first and self.norm is not None:
            output_change = (self._sub(output, uuids) - self.out_prev).flatten().abs().mean()
            rec["output_change"] = _f(output_change)
            if input_change is not None:
                self.k = output_change / input_change
                rec["k_new"] = _f(self.k)
        diff = output - x
        bo = diff.shape[0] // len(uuids)
        for i, u in enumerate(uuids):
            self.diffs[u] = diff[i * bo:(i + 1) * bo]
        if has_first:
            self.x_prev = self._sub(x, uuids).clone()
            self.out_prev = self._sub(output, uuids).clone()
            self.norm = output.flatten().abs().mean()
        return output


def check_margins(rule: EasyCache, label: str) -> float:
    """The smallest relative distance between a compared value and the threshold."""
    worst = math.inf
    for c in rule.calls:
        if "cumulative" in c and rule.threshold > 0:
            d = abs(c["cumulative"] - rule.threshold) / rule.threshold
            assert d > MARGIN, f"{label}: cumulative {c['cumulative']} too close to {rule.threshold}"
            worst = min(worst, d)
        for b in (rule.start_sigma, rule.end_sigma):
            if 0.0 < b < 999999999.0 and b != 1.0:
                assert abs(c["sigma"] - b) > MARGIN * b, f"{label}: sigma {c['sigma']} at a boundary {b}"
    return worst


def summary(rule: EasyCache) -> dict:
    return dict(
        computed=[c["computed"] for c in rule.calls],
        skipped=rule.skipped,
        calls=rule.calls,
    )


# --------------------------------------------------------------------------------------------
# DiT
# --------------------------------------------------------------------------------------------


class DiTRunner:
    def __init__(self):
        run = traces.BASE_RUN
        self.run = run
        model = traces.load_model("trace_dit", torch.float32)
        self.channels = model.config.in_channels
        self.null = model.config.num_embeds_ada_norm
        self.noise = traces.noise_for(model.config, run["seed"])
        scheduler = traces.SCHEDULERS[run["scheduler"]]()
        self.log_sigmas = ddpm_log_sigmas(scheduler)

    def sigma(self, t: int) -> float:
        return float(math.exp(self.log_sigmas[t]))

    @torch.no_grad()
    def __call__(self, rule: EasyCache | None, probe: list | None = None):
        model = traces.load_model("trace_dit", torch.float32)
        original = model.forward
        c = self.channels

        def forward(hidden_states, timestep=None, class_labels=None, **kwargs):
            t = int(timestep[0])
            assert float(timestep[0]) == t and (timestep == timestep[0]).all()
            uuids = ["uncond" if int(label) == self.null else "cond" for label in class_labels]
            assert uuids in (["cond", "uncond"], ["cond"]), uuids

            def run():
                return original(hidden_states, timestep=timestep, class_labels=class_labels, **kwargs).sample[:, :c]

            if rule is None:
                out = run()
                if probe is not None:
                    probe.append((t, hidden_states[:1].clone(), out.clone()))
                return Transformer2DModelOutput(sample=out)
            sigma = self.sigma(t)
            out = rule.call(sigma, hidden_states[:, :c], uuids, run)
            rule.calls[-1]["timestep"] = t
            return Transformer2DModelOutput(sample=out)

        model.forward = forward
        pipe = traces.DiTTracePipeline(transformer=model, scheduler=traces.SCHEDULERS[self.run["scheduler"]]())
        pipe.set_progress_bar_config(disable=True)
        return pipe(self.noise, self.run["class_label"], self.run["guidance"], self.run["steps"])


# --------------------------------------------------------------------------------------------
# FLUX
# --------------------------------------------------------------------------------------------


class FluxRunner:
    def __init__(self):
        self.pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
        self.pipe.set_progress_bar_config(disable=True)
        meta = safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()
        self.prompt = json.loads(meta["pipe_prompt"])
        self.noise = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(FLUX_SEED),
                                  dtype=torch.float32)
        self.packed = FluxPipeline._pack_latents(self.noise, 1, 16, 8, 8)
        self.vae_scale = self.pipe.vae_scale_factor
        assert torch.equal(self.unpack(self.packed), self.noise)
        c = self.pipe.scheduler.config
        self.mu = calculate_shift(self.packed.shape[1], c.base_image_seq_len, c.max_image_seq_len,
                                  c.base_shift, c.max_shift)

    def unpack(self, packed):
        return FluxPipeline._unpack_latents(packed, 16, 16, self.vae_scale)

    @torch.no_grad()
    def __call__(self, rule: EasyCache | None, probe: list | None = None):
        transformer = self.pipe.transformer
        original = type(transformer).forward

        def forward(*args, **kwargs):
            assert not args
            hidden = kwargs["hidden_states"]
            timestep = kwargs["timestep"]
            return_dict = kwargs.get("return_dict", True)

            def run():
                out = original(transformer, **{**kwargs, "return_dict": False})[0]
                return self.unpack(out)

            x = self.unpack(hidden)
            if rule is None:
                out = run()
                if probe is not None:
                    probe.append((float(timestep[0]), hidden.clone(), FluxPipeline._pack_latents(out, 1, 16, 8, 8)))
            else:
                out = rule.call(float(timestep[0]), x, ["cond"], run)
            out = FluxPipeline._pack_latents(out, out.shape[0], out.shape[1], out.shape[2], out.shape[3])
            return (out,) if not return_dict else Transformer2DModelOutput(sample=out)

        transformer.forward = forward
        try:
            return self.pipe(self.prompt, height=16, width=16, num_inference_steps=FLUX_STEPS, guidance_scale=3.5,
                             max_sequence_length=16, latents=self.packed.clone(), output_type="latent").images
        finally:
            del transformer.forward


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------

# (threshold, start_percent, end_percent, subsample, first_branch, note)
DIT_CASES = [
    (0.0, 0.15, 0.95, 8, "uncond", "threshold 0 never reuses (cumulative >= 0): equals the uncached run"),
    (0.2, 0.15, 0.95, 8, "uncond", "ComfyUI's defaults"),
    (0.05, 0.15, 0.95, 8, "uncond", "a low threshold"),
    (0.1, 0.15, 0.95, 8, "uncond", ""),
    (0.4, 0.15, 0.95, 8, "uncond", ""),
    (1.0, 0.15, 0.95, 8, "uncond", "a high threshold"),
    (0.2, 0.0, 1.0, 8, "uncond", "the whole run: p <= 0 -> sigma 999999999.9, p >= 1 -> sigma 0"),
    (0.2, 0.3, 0.8, 8, "uncond", "a narrow window"),
    (0.4, 0.5, 1.0, 8, "uncond", "starts late: the calls before the window only store the diffs"),
    (0.2, 0.15, 0.95, 8, "cond", "measured on the cond half of the [cond; uncond] batch"),
    (0.2, 0.15, 0.95, 1, "uncond", "no subsampling (ComfyUI's node hard-codes 8)"),
]
FLUX_CASES = [
    (0.0, 0.15, 0.95, 8, "cond", "threshold 0 never reuses: equals the uncached run"),
    (0.2, 0.15, 0.95, 8, "cond", "ComfyUI's defaults"),
    (0.1, 0.15, 0.95, 8, "cond", "a low threshold"),
    (0.4, 0.15, 0.95, 8, "cond", ""),
    (1.0, 0.15, 0.95, 8, "cond", "a high threshold"),
    (0.2, 0.0, 1.0, 8, "cond", "the whole run (sigma 1.0 of the first step is inside: <=)"),
    (0.4, 0.3, 0.7, 8, "cond", "a narrow window"),
    (0.2, 0.15, 0.95, 1, "cond", "no subsampling"),
]


def run_cases(model: str, runner, cases, to_sigma, tensors, runs, uncached):
    for i, (thr, start, end, sub, first, note) in enumerate(cases):
        start_sigma, end_sigma = to_sigma(start), to_sigma(end)
        rule = EasyCache(thr, start_sigma, end_sigma, subsample=sub, first_branch=first)
        latents = runner(rule)
        label = f"{model}_{i}"
        worst = check_margins(rule, label)
        if thr == 0.0:
            assert torch.equal(latents, uncached), f"{label}: threshold 0 differs from the uncached run"
        key = f"latents/{label}"
        tensors[key] = latents
        runs.append(dict(
            name=label, model=model, note=note, reuse_threshold=thr, start_percent=start, end_percent=end,
            start_sigma=start_sigma, end_sigma=end_sigma, subsample=sub, first_branch=first,
            latents=key, threshold_margin=None if math.isinf(worst) else worst, **summary(rule)))
        reused = [j for j, c in enumerate(rule.calls) if not c["computed"]]
        print(f"{label:8s} thr {thr:<5} window {start}-{end} sub {sub} first {first:6s}: "
              f"reused {len(reused):2d}/{len(rule.calls)} {reused}")


def main() -> None:
    assert sys.byteorder == "little"
    setup_determinism()
    tensors: dict[str, torch.Tensor] = {}
    runs: list[dict] = []

    # --- DiT ---
    dit = DiTRunner()
    probe: list = []
    dit_uncached = dit(None, probe)
    tensors["dit/noise"] = dit.noise
    tensors["dit/uncached"] = dit_uncached
    tensors["dit/model_input"] = torch.stack([p[1] for p in probe])
    tensors["dit/model_output"] = torch.stack([p[2] for p in probe])
    dit_timesteps = [p[0] for p in probe]
    dit_sigmas = [dit.sigma(t) for t in dit_timesteps]

    def dit_to_sigma(p):
        s = ddpm_percent_to_sigma(p, dit.log_sigmas)
        # The sigma window is the timestep window t <= (1 - p) * 999.
        for t in dit_timesteps:
            assert (dit.sigma(t) <= s) == (p <= 0.0 or (p < 1.0 and t <= (1.0 - p) * 999.0)), (p, t)
        return s

    run_cases("trace_dit", dit, DIT_CASES, dit_to_sigma, tensors, runs, dit_uncached)

    # --- FLUX ---
    flux = FluxRunner()
    probe = []
    flux_uncached = flux(None, probe)
    tensors["flux/noise"] = flux.noise
    tensors["flux/uncached"] = flux_uncached
    tensors["flux/model_input"] = torch.stack([p[1] for p in probe])
    tensors["flux/model_output"] = torch.stack([p[2] for p in probe])
    flux_sigmas = [p[0] for p in probe]
    run_cases("flux_pipeline", flux, FLUX_CASES, lambda p: flux_percent_to_sigma(p, flux.mu), tensors, runs,
              flux_uncached)

    meta = dict(
        produced_by="tools/make_easycache_traces.py",
        rule="ComfyUI comfy_extras/nodes_easycache.py EasyCache, the revision with _extract_tensor / "
             "can_apply_cache_diff / per-branch batch slices in apply_cache_diff (Comfy-Org/ComfyUI a125cd8, "
             "2025-10-11, is the same rule except that it adds every branch's diff to the whole batch on a reuse)",
        versions=package_versions(),
        comparison="reuse iff cumulative < reuse_threshold (strict), in float32; window: sigma <= start_sigma; "
                   "past the end: not sigma > end_sigma",
        dit=dict(
            run=traces.BASE_RUN, batch=["cond", "uncond"], latent_channels=dit.channels,
            timesteps=dit_timesteps, sigmas=dit_sigmas,
            sigma_of_timestep="sqrt((1 - abar_t) / abar_t), abar = cumprod(1 - linspace(1e-4, 0.02, 1000)) (f64)",
            percent_to_sigma="p<=0: 999999999.9; p>=1: 0; else log-linear interpolation of the training "
                             "sigmas at tau = (1 - p) * 999 (== window t <= tau)",
            model_input="hidden_states (the [x; x] latent batch), latent channels",
            model_output="transformer .sample[:, :3] (learned-variance channels dropped)",
        ),
        flux=dict(
            steps=FLUX_STEPS, seed=FLUX_SEED, guidance_scale=3.5, prompt=flux.prompt, mu=flux.mu, sigmas=flux_sigmas,
            percent_to_sigma="p<=0: 1; p>=1: 0; else exp(mu) / (exp(mu) + (1 / (1 - p) - 1))",
            layout="rule tensors are FluxPipeline._unpack_latents(packed, 16, 16, 2): [1, 16, 8, 8]; "
                   "model_input / model_output / latents are stored packed [1, 16, 64]",
            sigma_of_call="the timestep handed to the transformer (t / 1000)",
        ),
        tensors=dict(
            model_input="uncached run, per step: DiT the cond half [1,3,16,16] (both halves are equal), "
                        "FLUX the packed latent",
            model_output="uncached run, per step: DiT [2,3,16,16] eps of [cond; uncond], FLUX packed velocity",
        ),
    )
    write_safetensors(OUT, tensors, {"runs": json.dumps(runs), "meta": json.dumps(meta)})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
