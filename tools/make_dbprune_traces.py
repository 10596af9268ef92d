"""Traces of cache-dit's DBPrune (Dynamic Block Prune, cache-dit 1.5.3: ``DBPruneConfig``,
``PrunedContext``, ``PrunedContextManager``, ``PrunedBlocks_Pattern_*``) for the project's
DBPrune parity test.

What it runs: the installed cache-dit through ``cache_dit.enable_cache(pipe,
cache_config=DBPruneConfig(...))`` (pipeline mode: every pipeline call starts from fresh
contexts) on

* the seeded 12-block trace DiT (``nodes/tests/fixtures/cache_traces/trace_dit``, written by
  ``tools/make_cache_traces.py``) inside ``make_cache_traces.DiTTracePipeline``: 25
  DPM-Solver++ steps, guidance 4, class 3, seed 7, batched CFG (one call per step, cond and
  uncond halves in one batch) and, for the ``sep_*`` runs, separate CFG (two calls per step,
  conditional first; cache-dit's ``enable_separate_cfg=True``);
* the tiny FluxPipeline fixture (``nodes/tests/fixtures/flux_pipeline``: 2 double + 2 single
  blocks): 12 steps, guidance 3.5, 16x16 px, ``max_sequence_length`` 16, the prompt of
  ``flux_golden.safetensors``, a seeded packed starting latent. cache-dit's default FLUX wiring
  (``CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS=1``) flattens the two lists into one 4-block list in
  one context; one run (``flux_two_lists``) switches that off to show the per-list wiring.

Settings: several thresholds (some prune a few blocks, one prunes most), Fn/Bn partitions,
``non_prune_block_ids``, the dynamic threshold on and off, warmup window and interval,
``max_cached_steps``, ``max_continuous_cached_steps``, a steps-computation mask, separate CFG with
``cfg_compute_first``, and the two configurations the library rejects at run time (recorded with
their error).

**cache-dit 1.5.3 cannot run DBPrune on a Pattern_3 model such as DiT**:
``PrunedBlocks_Pattern_3_4_5.compute_or_prune`` calls ``self._process_block_outputs(h, e)``,
but the Pattern_3_4_5 override takes one argument, so the first computed block raises
``TypeError``. The ``dit_stock_1.5.3`` entry records that error. Every other DiT run applies
the minimal arity fix (``ARITY_FIX`` below: the extra argument is dropped, which is the only
reading for Pattern_3, whose blocks return the hidden stream only); nothing else in cache-dit
is touched. FLUX (Pattern_1) runs the stock code.

What is recorded (read from cache-dit's own state around its own calls, nothing recomputed):
per transformer call (and CFG branch) and per block, one letter saying what happened, the
relative-L1 diff cache-dit measured for the block (``similarity``'s recorded value) and the
threshold it compared it to (after the dynamic relaxation). Letters:

* ``F`` never prunable (first Fn, last Bn, ``non_prune_block_ids``): computed, nothing checked;
* ``W`` warmup step, ``S`` computed by the steps mask, ``M`` ``max_cached_steps`` reached,
  ``K`` ``max_continuous_cached_steps`` reached, ``B`` the block has no stored input yet:
  computed, no diff measured;
* ``C`` diff measured, not below the threshold: computed;
* ``P`` pruned after a measured diff (or a threshold >= 1, which records -1.0);
* ``s`` pruned by a static steps mask without a diff.

Output: ``nodes/tests/fixtures/dbprune_traces.safetensors``. Tensors: ``noise/dit`` [1,3,16,16],
``noise/flux`` [1,16,8,8] (unpacked; the pipeline is given ``FluxPipeline._pack_latents`` of it),
``uncached/{dit_batched,dit_separate,flux}/<dtype>``, and per run ``final/<run>/<dtype>`` (DiT
[1,3,16,16], FLUX packed [1,16,64]), ``diff/<run>/<dtype>`` (float64, one value per ``C`` or
``P`` letter, in call order then block order) and, for runs with the dynamic threshold,
``threshold/<run>/<dtype>`` (same layout; static runs compare with ``residual_diff_threshold``).
Metadata: ``runs`` (JSON, one object per run: the full ``DBPruneConfig``, the letters per call as
``[call, step, branch, list, letters]``, cache-dit's own summary statistics, tensor keys) plus
``versions``, ``letters``, ``arity_fix``, ``flux_prompt``, ``dit_run``, ``flux_run``. Every run is
made in float32 and float64 (the settings are chosen so that both decide alike; asserted). The
written DBPrune spec that goes with it (rules, quirks, format, run list) is ``dbprune.md`` in the
lead's notes.

Run from the repository root (versions pinned in ``tools/requirements-fixtures.txt``)::

    /work/.fixvenv/bin/python tools/make_dbprune_traces.py

CPU only, one thread, no network, no pretrained weights; about a minute. Running it twice gives a
byte-identical file.
"""

from __future__ import annotations

import os

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.dont_write_bytecode = True  # importing the sibling scripts must not leave tools/__pycache__
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import cache_dit  # noqa: E402
from cache_dit import DBPruneConfig  # noqa: E402
from cache_dit.envs import ENV  # noqa: E402
from cache_dit.caching.cache_blocks.pattern_base import PrunedBlocks_Pattern_Base  # noqa: E402
from cache_dit.caching.cache_blocks.pattern_3_4_5 import (  # noqa: E402
    CachedBlocks_Pattern_3_4_5,
    PrunedBlocks_Pattern_3_4_5,
)
from cache_dit.caching.cache_contexts.prune_manager import PrunedContextManager  # noqa: E402
from diffusers import FluxPipeline  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

import make_cache_traces as traces  # noqa: E402
from make_fixtures import json_safe, package_versions, setup_determinism, write_safetensors  # noqa: E402

FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "dbprune_traces.safetensors"
FLUX_NOISE_SEED = 8100
FLUX_STEPS = 12
DTYPES = ((torch.float32, "f32"), (torch.float64, "f64"))

LETTERS = {
    "F": "never prunable (first Fn, last Bn, non_prune_block_ids): computed, not checked",
    "W": "warmup step: computed, no diff",
    "S": "steps mask says compute: computed, no diff",
    "M": "max_cached_steps reached (len(cached_steps of the branch) >= max): computed, no diff",
    "K": "max_continuous_cached_steps reached: computed, no diff",
    "B": "no stored input for this block and branch yet: computed, no diff",
    "C": "diff measured, diff >= threshold: computed",
    "P": "pruned after a measured diff (diff < threshold; a threshold >= 1 records -1.0)",
    "s": "pruned by a static steps mask, no diff",
    "T": "threshold <= 0: computed, no diff",
}

# --------------------------------------------------------------------------------------------
# The arity fix for Pattern_3 (DiT), applied only to the runs that say so
# --------------------------------------------------------------------------------------------

ARITY_FIX = (
    "PrunedBlocks_Pattern_3_4_5._process_block_outputs(self, h, e=None) -> "
    "CachedBlocks_Pattern_3_4_5._process_block_outputs(self, h): cache-dit 1.5.3 passes the "
    "incoming encoder stream as a second argument that the Pattern_3_4_5 override does not take"
)
_STOCK_PBO = PrunedBlocks_Pattern_3_4_5.__dict__.get("_process_block_outputs")


def _fixed_pbo(self, hidden_states, _encoder_hidden_states=None):
    return CachedBlocks_Pattern_3_4_5._process_block_outputs(self, hidden_states)


def set_arity_fix(on: bool) -> None:
    if on:
        PrunedBlocks_Pattern_3_4_5._process_block_outputs = _fixed_pbo
    elif _STOCK_PBO is None:
        if "_process_block_outputs" in PrunedBlocks_Pattern_3_4_5.__dict__:
            del PrunedBlocks_Pattern_3_4_5._process_block_outputs
    else:
        PrunedBlocks_Pattern_3_4_5._process_block_outputs = _STOCK_PBO


# --------------------------------------------------------------------------------------------
# Recording cache-dit's decisions
# --------------------------------------------------------------------------------------------

CALLS: list[dict] = []  # one entry per PrunedBlocks forward (per block list per transformer call)
_LAST_SIM: list = []  # (threshold, recorded diff, result) of the last similarity() call


def _branch_lists(ctx):
    cfg = ctx.is_separate_cfg_step()
    return (ctx.cfg_cached_steps, ctx.cfg_residual_diffs, ctx.cfg_continuous_cached_steps) if cfg else (
        ctx.cached_steps,
        ctx.residual_diffs,
        ctx.continuous_cached_steps,
    )


def _expected_reason(blocks, block_id: int):
    """Which of cache-dit's early rules will refuse this block, read from the context's state
    before ``can_prune`` runs (checked against what the library then does)."""
    mgr = blocks.context_manager
    ctx = mgr.get_context()
    cc = ctx.cache_config
    if blocks._skip_prune(block_id):
        return "F"
    if ctx.is_in_warmup():
        return "W"
    if cc.steps_computation_mask is not None:
        if ctx.is_in_full_compute_steps():
            return "S"
        if cc.steps_computation_policy == "static":
            return "s"
    cached, _, cont = _branch_lists(ctx)
    if cc.max_cached_steps >= 0 and len(cached) >= cc.max_cached_steps:
        return "M"
    if cached and cached[-1] == ctx.get_current_step():
        cont -= 1
    if cc.max_continuous_cached_steps >= 0 and cont >= cc.max_continuous_cached_steps:
        return "K"
    if ctx.get_residual_diff_threshold() <= 0.0:
        return "T"
    if mgr.get_Fn_buffer(f"{blocks.cache_prefix}_{block_id}_Fn_original") is None:
        return "B"
    return None  # goes to similarity()


def _wrap_maybe_prune(cls):
    original = cls._maybe_prune

    def _maybe_prune(self, block_id, hidden_states, prefix="Bn_original"):
        ctx = self.context_manager.get_context()
        call = CALLS[-1]
        reason = _expected_reason(self, block_id)
        _, diffs, _ = _branch_lists(ctx)
        step_key = str(ctx.get_current_step())
        n_before = len(diffs.get(step_key, []))
        _LAST_SIM.clear()
        pruned = original(self, block_id, hidden_states, prefix=prefix)
        n_after = len(diffs.get(step_key, []))
        if reason is None:
            assert n_after == n_before + 1 and len(_LAST_SIM) == 1, (block_id, n_before, n_after)
            thr, diff, result = _LAST_SIM[0]
            assert diffs[step_key][-1] == diff and result == pruned
            letter = "P" if pruned else "C"
        else:
            assert n_after == n_before and not _LAST_SIM, (reason, block_id)
            assert pruned == (reason == "s"), (reason, pruned)
            thr, diff, letter = None, None, reason
        call["letters"].append(letter)
        call["diffs"].append(diff)
        call["thresholds"].append(thr)
        return pruned

    cls._maybe_prune = _maybe_prune


def _wrap_forward(cls):
    original = cls.forward

    def forward(self, *args, **kwargs):
        CALLS.append(dict(letters=[], diffs=[], thresholds=[], list=self.cache_context))
        out = original(self, *args, **kwargs)
        ctx = self.context_manager.get_context()
        call = CALLS[-1]
        assert len(call["letters"]) == self.num_blocks
        call["call"] = ctx.get_current_transformer_step()
        call["step"] = ctx.get_current_step()
        call["branch"] = "cfg" if ctx.is_separate_cfg_step() else "cond"
        pruned = sum(c in "Ps" for c in call["letters"])
        counts = ctx.cfg_pruned_blocks if ctx.is_separate_cfg_step() else ctx.pruned_blocks
        assert counts[-1] == pruned, (counts, call["letters"])
        return out

    cls.forward = forward


_SIMILARITY = PrunedContextManager.similarity


def _similarity(self, t1, t2, *, threshold, parallelized=False, prefix="Fn"):
    result = _SIMILARITY(self, t1, t2, threshold=threshold, parallelized=parallelized, prefix=prefix)
    ctx = self.get_context()
    _, diffs, _ = _branch_lists(ctx)
    _LAST_SIM.append((float(threshold), diffs[str(ctx.get_current_step())][-1], bool(result)))
    return result


PrunedContextManager.similarity = _similarity
for _cls in (PrunedBlocks_Pattern_Base, PrunedBlocks_Pattern_3_4_5):
    _wrap_maybe_prune(_cls)
    _wrap_forward(_cls)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

BASE_PRUNE = dict(
    Fn_compute_blocks=1,
    Bn_compute_blocks=0,
    residual_diff_threshold=0.2,
    max_warmup_steps=4,
    warmup_interval=1,
    max_cached_steps=-1,
    max_continuous_cached_steps=-1,
)


def entry(name, model, note, cfg="batched", arity_fix=True, two_lists=False, **prune):
    return dict(
        name=name,
        model=model,
        note=note,
        cfg=cfg,
        arity_fix=arity_fix,
        two_lists=two_lists,
        prune={**BASE_PRUNE, **prune},
    )


def matrix() -> list[dict]:
    d, f = "trace_dit", "flux_pipeline"
    sep = dict(cfg="separate", enable_separate_cfg=True)
    e = [
        entry("dit_stock_1.5.3", d, "stock cache-dit 1.5.3 on a Pattern_3 model: TypeError at the first computed block", arity_fix=False),
    ]
    # Static thresholds after a 4-step warmup: the trace DiT's block inputs drift together, so a
    # step prunes all of its prunable blocks or none.
    for thr in (0.1, 0.2, 0.3, 0.9):
        e.append(entry(f"dit_W4_R{thr}", d, "static threshold, warmup 4", residual_diff_threshold=thr))
    e.append(entry("dit_W4_R1.0", d, "threshold >= 1: every prunable block with a stored input is pruned (diff recorded as -1.0); prunes most", residual_diff_threshold=1.0))
    # Warmup 1 and a threshold near the step-1 diffs: blocks of one step decide differently
    # (stale references of pruned blocks against fresh ones of computed blocks).
    w1 = dict(max_warmup_steps=1, residual_diff_threshold=0.66)
    e.append(entry("dit_W1_R0.66", d, "per-block decisions differ within a step", **w1))
    e.append(entry("dit_W3_R0.57", d, "per-block decisions differ within a step", max_warmup_steps=3, residual_diff_threshold=0.57))
    e.append(entry("dit_F2B1_W1_R0.66", d, "Fn 2, Bn 1", Fn_compute_blocks=2, Bn_compute_blocks=1, **w1))
    e.append(entry("dit_F4B0_W1_R0.66", d, "Fn 4", Fn_compute_blocks=4, **w1))
    e.append(entry("dit_F1B3_W1_R0.66", d, "Bn 3", Bn_compute_blocks=3, **w1))
    e.append(entry("dit_nonprune_W1_R0.66", d, "non_prune_block_ids [3, 7, 20] (20 >= N is dropped)", non_prune_block_ids=[3, 7, 20], **w1))
    e.append(entry("dit_W0_R0.66", d, "no warmup: step 0 stores every prunable block's input and residual", max_warmup_steps=0, residual_diff_threshold=0.66))
    e.append(entry("dit_W8I3_R0.66", d, "warmup 8 interval 3: only steps 0, 3, 6 are forced", max_warmup_steps=8, warmup_interval=3, residual_diff_threshold=0.66))
    e.append(entry("dit_maxcached4_W1_R0.66", d, "max_cached_steps 4: counts steps with any pruned block, checked per block", max_cached_steps=4, **w1))
    for mcc in (1, 2):
        e.append(entry(f"dit_maxcont{mcc}_W1_R0.66", d, "max_continuous_cached_steps (per step; a hit earlier in the same step is not counted)", max_continuous_cached_steps=mcc, **w1))
    # Dynamic threshold.
    dyn = dict(enable_dynamic_prune_threshold=True)
    for thr in (0.1, 0.2):
        e.append(entry(f"dit_dynamic_W4_R{thr}", d, "dynamic threshold, default relax 1.25 and cap 2 * threshold", residual_diff_threshold=thr, **dyn))
    e.append(
        entry(
            "dit_dynamic_W4_R0.1_cap0.5_relax1.5",
            d,
            "dynamic threshold, max_dynamic_prune_threshold 0.5, relax 1.5",
            residual_diff_threshold=0.1,
            max_dynamic_prune_threshold=0.5,
            dynamic_prune_threshold_relax_ratio=1.5,
            **dyn,
        )
    )
    e.append(entry("dit_dynamic_W1_R0.5", d, "dynamic threshold, warmup 1", max_warmup_steps=1, residual_diff_threshold=0.5, **dyn))
    e.append(entry("dit_dynamic_F2B1_W1_R0.4", d, "dynamic threshold, Fn 2 Bn 1", Fn_compute_blocks=2, Bn_compute_blocks=1, max_warmup_steps=1, residual_diff_threshold=0.4, **dyn))
    # Steps computation mask.
    medium = [int(v) for v in cache_dit.steps_mask(total_steps=traces.BASE_RUN["steps"], mask_policy="medium")]
    for policy in ("dynamic", "static"):
        e.append(
            entry(
                f"dit_scm_medium_{policy}",
                d,
                f"steps mask (cache_dit.steps_mask medium), policy {policy}",
                max_warmup_steps=8,
                residual_diff_threshold=0.3,
                steps_computation_mask=medium,
                steps_computation_policy=policy,
            )
        )
    # Separate CFG: two calls per step, conditional first.
    e.append(entry("sep_W4_R0.2", d, "separate CFG: each branch has its own inputs, residuals and lists", residual_diff_threshold=0.2, **sep))
    e.append(entry("sep_W1_R0.66", d, "separate CFG, per-block decisions", **w1, **sep))
    for thr in (0.1, 0.2):
        e.append(
            entry(
                f"sep_dynamic_W4_R{thr}",
                d,
                "separate CFG, dynamic threshold: the CFG branch relaxes its threshold from the cond branch's diffs of the step",
                residual_diff_threshold=thr,
                **dyn,
                **sep,
            )
        )
    e.append(entry("sep_maxcont1_W1_R0.66", d, "separate CFG, max_continuous_cached_steps 1 (per branch)", max_continuous_cached_steps=1, **w1, **sep))
    e.append(
        entry(
            "sep_cfgfirst_dynamic_W4_R0.2",
            d,
            "separate CFG with cfg_compute_first (and cfg_diff_compute_separate False, which it requires): even calls "
            "are cache-dit's CFG branch (here the pipeline's conditional call); that branch runs first, finds no "
            "non-CFG list for the step and so never relaxes its threshold, and the shared-diff shortcut never fires",
            residual_diff_threshold=0.2,
            cfg_compute_first=True,
            cfg_diff_compute_separate=False,
            **dyn,
            **sep,
        )
    )
    e.append(
        entry(
            "sep_shared_diff",
            d,
            "separate CFG, cfg_diff_compute_separate False: the CFG branch takes the cond diff, which is a list in DBPrune",
            cfg_diff_compute_separate=False,
            residual_diff_threshold=0.2,
            **sep,
        )
    )
    # FLUX.1: blocks 0, 1 double, 2, 3 single in the flattened list.
    for thr in (0.05, 0.1, 0.2, 0.5):
        e.append(entry(f"flux_W2_R{thr}", f, "FLUX, one flattened 4-block list" + (" (nothing pruned)" if thr == 0.05 else ""), max_warmup_steps=2, residual_diff_threshold=thr))
    e.append(entry("flux_W0_R0.06", f, "FLUX, no warmup", max_warmup_steps=0, residual_diff_threshold=0.06))
    e.append(entry("flux_W1_R0.12", f, "FLUX, warmup 1", max_warmup_steps=1, residual_diff_threshold=0.12))
    e.append(entry("flux_F2B1_W2_R0.2", f, "FLUX Fn 2 Bn 1: only block 2 (the first single block) is prunable", Fn_compute_blocks=2, Bn_compute_blocks=1, max_warmup_steps=2, residual_diff_threshold=0.2))
    e.append(entry("flux_nonprune2_W2_R0.2", f, "FLUX non_prune_block_ids [2]", max_warmup_steps=2, residual_diff_threshold=0.2, non_prune_block_ids=[2]))
    e.append(entry("flux_dynamic_W2_R0.1", f, "FLUX dynamic threshold", max_warmup_steps=2, residual_diff_threshold=0.1, **dyn))
    e.append(entry("flux_dynamic_W0_R0.05", f, "FLUX dynamic threshold, no warmup", max_warmup_steps=0, residual_diff_threshold=0.05, **dyn))
    e.append(entry("flux_maxcont1_W2_R0.5", f, "FLUX max_continuous_cached_steps 1", max_warmup_steps=2, residual_diff_threshold=0.5, max_continuous_cached_steps=1))
    e.append(entry("flux_maxcached2_W2_R0.5", f, "FLUX max_cached_steps 2", max_warmup_steps=2, residual_diff_threshold=0.5, max_cached_steps=2))
    e.append(
        entry(
            "flux_two_lists_W2_R0.2",
            f,
            "CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS=0: two lists (double, single), two contexts, Fn/Bn per list",
            two_lists=True,
            max_warmup_steps=2,
            residual_diff_threshold=0.2,
        )
    )
    names = [x["name"] for x in e]
    assert len(names) == len(set(names)), "duplicate names"
    return e


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def flux_prompt() -> str:
    return json.loads(safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"])


def flux_noise() -> torch.Tensor:
    return randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(FLUX_NOISE_SEED), dtype=torch.float32)


def make_pipe(model: str, dtype: torch.dtype):
    if model == "trace_dit":
        transformer = traces.load_model("trace_dit", dtype)
        pipe = traces.DiTTracePipeline(transformer=transformer, scheduler=traces.SCHEDULERS[traces.BASE_RUN["scheduler"]]())
    else:
        pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def call_pipe(pipe, model: str, dtype: torch.dtype, cfg: str) -> torch.Tensor:
    if model == "trace_dit":
        run = traces.BASE_RUN
        noise = traces.noise_for(pipe.transformer.config, run["seed"]).to(dtype)
        return pipe(noise, run["class_label"], run["guidance"], run["steps"], separate_cfg=cfg == "separate")
    packed = FluxPipeline._pack_latents(flux_noise(), 1, 16, 8, 8).to(dtype)
    return pipe(
        flux_prompt(),
        height=16,
        width=16,
        num_inference_steps=FLUX_STEPS,
        guidance_scale=3.5,
        max_sequence_length=16,
        latents=packed,
        output_type="latent",
    ).images


def run_prune(cfg: dict, dtype: torch.dtype) -> dict:
    set_arity_fix(cfg["arity_fix"])
    old_env = ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS
    ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS = not cfg["two_lists"]
    try:
        pipe = make_pipe(cfg["model"], dtype)
        cache_dit.enable_cache(pipe, cache_config=DBPruneConfig(**cfg["prune"]))
        CALLS.clear()
        try:
            latents = call_pipe(pipe, cfg["model"], dtype, cfg["cfg"])
            stats = [s for s in cache_dit.summary(pipe, logging=False) if s.cache_options]
        except (TypeError, AssertionError) as err:
            return dict(rejected=f"{type(err).__name__}: {err}", calls_before_error=len(CALLS))
        finally:
            # enable_cache wraps the pipeline *class*'s __call__: always undo it.
            cache_dit.disable_cache(pipe)
    finally:
        ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS = old_env
        set_arity_fix(True)
    assert torch.isfinite(latents).all(), cfg["name"]
    calls = [dict(c) for c in CALLS]
    return dict(latents=latents, calls=calls, stats=stats)


def summary_of(stats) -> list[dict]:
    """cache-dit's own summary, one entry per distinct block list (the transformer-level entry
    repeats the last list's numbers)."""
    out = []
    for s in stats:
        item = dict(
            pruned_steps=list(s.pruned_steps),
            cfg_pruned_steps=list(s.cfg_pruned_steps),
            pruned_blocks=list(s.pruned_blocks),
            cfg_pruned_blocks=list(s.cfg_pruned_blocks),
            actual_blocks=list(s.actual_blocks),
            cfg_actual_blocks=list(s.cfg_actual_blocks),
            pruned_ratio=s.pruned_ratio,
            cfg_pruned_ratio=s.cfg_pruned_ratio,
            accumulated_cached_steps=s.accumulated_cached_steps,
            cfg_accumulated_cached_steps=s.cfg_accumulated_cached_steps,
            accumulated_executed_steps=s.accumulated_executed_steps,
            accumulated_transformer_executed_steps=s.accumulated_transformer_executed_steps,
            summary_string=cache_dit.strify(s),
        )
        if item not in out:
            out.append(item)
    return out


def calls_json(calls: list[dict], lists: list[str]) -> list[list]:
    """One ``[call, step, branch, list, letters]`` per block-list forward, in execution order."""
    return [[c["call"], c["step"], c["branch"], lists.index(c["list"]), "".join(c["letters"])] for c in calls]


def measured(calls: list[dict], key: str) -> torch.Tensor:
    """The measured values of ``key`` in call-major, block-minor order (one per ``C`` or
    ``P`` letter), as float64."""
    values = [float(v) for c in calls for v in c[key] if v is not None]
    assert len(values) == sum(c["letters"].count("C") + c["letters"].count("P") for c in calls)
    return torch.tensor(values, dtype=torch.float64)


def margin(calls: list[dict]) -> float:
    m = math.inf
    for c in calls:
        for d, t in zip(c["diffs"], c["thresholds"]):
            if d is not None and d >= 0.0:
                m = min(m, abs(d - t) / t)
    return m


def main() -> None:
    assert sys.byteorder == "little", "safetensors data must be little-endian"
    setup_determinism()
    warnings.filterwarnings("ignore")
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("cache_dit", "diffusers", "transformers")):
            logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("cache_dit").setLevel(logging.ERROR)
    assert ENV.CACHE_DIT_FLUX_ENABLE_DUMMY_BLOCKS, "keep cache-dit's default FLUX wiring"

    tensors: dict[str, torch.Tensor] = {}
    tensors["noise/dit"] = traces.noise_for(traces.load_model("trace_dit", torch.float32).config, traces.BASE_RUN["seed"])
    tensors["noise/flux"] = flux_noise()
    for dtype, tag in DTYPES:
        for model, cfg in (("trace_dit", "batched"), ("trace_dit", "separate"), ("flux_pipeline", "none")):
            pipe = make_pipe(model, dtype)
            key = f"uncached/{'dit' if model == 'trace_dit' else 'flux'}{'_' + cfg if model == 'trace_dit' else ''}/{tag}"
            tensors[key] = call_pipe(pipe, model, dtype, cfg).to(dtype)

    runs = []
    for cfg in matrix():
        record = dict(
            name=cfg["name"],
            model=cfg["model"],
            note=cfg["note"],
            cfg=cfg["cfg"] if cfg["model"] == "trace_dit" else "none",
            arity_fix=cfg["arity_fix"] if cfg["model"] == "trace_dit" else False,
            flux_lists="two" if cfg["two_lists"] else ("flattened" if cfg["model"] == "flux_pipeline" else None),
            prune=json.loads(json.dumps(DBPruneConfig(**cfg["prune"]).as_dict(), default=str)),
            noise="noise/dit" if cfg["model"] == "trace_dit" else "noise/flux",
        )
        record["prune"]["cache_type"] = "DBPrune"
        record["strify"] = DBPruneConfig(**cfg["prune"]).strify()
        dynamic = bool(cfg["prune"].get("enable_dynamic_prune_threshold"))
        for dtype, tag in DTYPES:
            res = run_prune(cfg, dtype)
            if "rejected" in res:
                record["rejected"] = res["rejected"]
                record["calls_before_error"] = res["calls_before_error"]
                break
            calls = res["calls"]
            lists = sorted({c["list"] for c in calls}, key=lambda n: [c["list"] for c in calls].index(n))
            compact = calls_json(calls, lists)
            summary = summary_of(res["stats"])
            if "calls" in record:
                # The settings are picked with a margin: both precisions decide alike.
                assert compact == record["calls"], f"{cfg['name']}: f32 and f64 decide differently"
                assert summary == record["summary"], cfg["name"]
            # cache-dit names a context "<blocks name>_<id(blocks)>": keep the blocks name.
            record["lists"] = [n.rsplit("_", 1)[0] if n.rsplit("_", 1)[-1].isdigit() else n for n in lists]
            record["calls"] = compact
            record["summary"] = summary
            final = f"final/{cfg['name']}/{tag}"
            tensors[final] = res["latents"].to(dtype)
            tensors[f"diff/{cfg['name']}/{tag}"] = measured(calls, "diffs")
            if dynamic:
                tensors[f"threshold/{cfg['name']}/{tag}"] = measured(calls, "thresholds")
            else:
                base = float(cfg["prune"]["residual_diff_threshold"])
                assert all(t == base for c in calls for t in c["thresholds"] if t is not None), cfg["name"]
            record[tag] = dict(
                final=final,
                diff=f"diff/{cfg['name']}/{tag}",
                threshold=f"threshold/{cfg['name']}/{tag}" if dynamic else None,
                min_relative_margin=margin(calls),
            )
        runs.append(record)
        if "rejected" in record:
            print(f"{cfg['name']:36s} rejected: {record['rejected'][:120]}")
            continue
        record["pruned"] = sum(c[4].count("P") + c[4].count("s") for c in record["calls"])
        record["blocks_total"] = sum(len(c[4]) for c in record["calls"])
        print(
            f"{cfg['name']:36s} pruned {record['pruned']:4d}/{record['blocks_total']:4d}  "
            f"margin f32 {record['f32']['min_relative_margin']:.2e} f64 {record['f64']['min_relative_margin']:.2e}"
        )
        for c in record["calls"]:
            print(f"    {c[0]:3d} s{c[1]:<3d}{c[2]:5s}L{c[3]} {c[4]}")

    meta = {
        "produced_by": "tools/make_dbprune_traces.py",
        "versions": json.dumps({**package_versions(), "cache-dit": cache_dit.__version__}, sort_keys=True),
        "letters": json.dumps(LETTERS, sort_keys=True),
        "arity_fix": ARITY_FIX,
        "flux_prompt": json.dumps(flux_prompt()),
        "dit_run": json.dumps(traces.BASE_RUN, sort_keys=True),
        "flux_run": json.dumps(
            dict(steps=FLUX_STEPS, guidance=3.5, height=16, width=16, max_sequence_length=16, noise_seed=FLUX_NOISE_SEED),
            sort_keys=True,
        ),
        "runs": json.dumps(json_safe(runs), sort_keys=True),
    }
    write_safetensors(OUT, tensors, meta)
    print(f"{len(runs)} runs, {OUT.stat().st_size} bytes written to {OUT}")


if __name__ == "__main__":
    main()
