"""Traces of TeaCache's rule (ali-vilab/TeaCache, ``TeaCache4FLUX``; ALGORITHMS.md §3) on the
tiny FluxPipeline fixture, for the project's TeaCache parity test.

TeaCache ships as scripts that patch ``FluxTransformer2DModel.forward``, not as a package, so
this script states the published rule itself (written from ALGORITHMS.md §3.1–3.3, not copied)
and runs it around diffusers' own FLUX modules: the modulated input is block 0's ``norm1``
output (diffusers' ``AdaLayerNormZero``), its relative L1 change since the previous call is
rescaled by TeaCache's FLUX polynomial (``numpy.poly1d``) and accumulated; below
``rel_l1_thresh`` every block is skipped and the stored residual of the stack is added to the
embedded image tokens, else all blocks run and the sum restarts; the first and the last call
always compute; the previous modulated input is replaced on every call.

Recorded per threshold: each call's decision, accumulated distance and modulated input, and
the final latents. Output: ``nodes/tests/fixtures/teacache_traces.safetensors``. Run from the
repository root: ``/work/.fixvenv/bin/python tools/make_teacache_traces.py``. CPU, float32,
one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.utils.torch_utils import randn_tensor
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "nodes" / "tests" / "fixtures"
FLUX = FIXTURES / "flux_pipeline"
OUT = FIXTURES / "teacache_traces.safetensors"

# TeaCache4FLUX's fitted polynomial, highest power first (ALGORITHMS.md §3.3).
FLUX_COEFFICIENTS = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]


class Rule:
    """The per-run state of the rule."""

    def __init__(self, threshold: float, num_steps: int):
        self.threshold = threshold
        self.num_steps = num_steps
        self.cnt = 0
        self.acc = 0.0
        self.previous_modulated = None
        self.previous_residual = None
        self.calls: list[tuple[bool, float | None]] = []
        self.modulated: list[torch.Tensor] = []


def forward(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None,
            img_ids=None, txt_ids=None, guidance=None, joint_attention_kwargs=None, return_dict=True, **_):
    """diffusers' FluxTransformer2DModel.forward (no ControlNet, no IP-Adapter) with the rule."""
    rule: Rule = self.rule
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000
        temb = self.time_text_embed(timestep, guidance, pooled_projections)
    else:
        temb = self.time_text_embed(timestep, pooled_projections)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    rope = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    modulated = self.transformer_blocks[0].norm1(hidden_states, emb=temb)[0]
    rule.modulated.append(modulated.clone())
    if rule.cnt == 0 or rule.cnt == rule.num_steps - 1:
        compute, measured = True, None
        rule.acc = 0.0
    else:
        prev = rule.previous_modulated
        distance = ((modulated - prev).abs().mean() / prev.abs().mean()).item()
        rule.acc += float(np.poly1d(FLUX_COEFFICIENTS)(distance))
        measured = rule.acc
        compute = not rule.acc < rule.threshold
        if compute:
            rule.acc = 0.0
    rule.previous_modulated = modulated
    rule.cnt = (rule.cnt + 1) % rule.num_steps
    rule.calls.append((compute, measured))

    if not compute:
        hidden_states = hidden_states + rule.previous_residual
    else:
        original = hidden_states.clone()
        for block in self.transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=temb,
                image_rotary_emb=rope)
        for block in self.single_transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=temb,
                image_rotary_emb=rope)
        rule.previous_residual = hidden_states - original
    hidden_states = self.norm_out(hidden_states, temb)
    output = self.proj_out(hidden_states)
    return Transformer2DModelOutput(sample=output) if return_dict else (output,)


@torch.no_grad()
def run(pipe, threshold: float, latents, prompt: str, steps: int):
    pipe.transformer.rule = Rule(threshold, steps)
    out = pipe(prompt, height=16, width=16, num_inference_steps=steps, guidance_scale=3.5,
               max_sequence_length=16, latents=latents, output_type="latent").images
    return out, pipe.transformer.rule


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    prompt = json.loads(safe_open(str(FIXTURES / "flux_golden.safetensors"), "pt").metadata()["pipe_prompt"])
    pipe = FluxPipeline.from_pretrained(str(FLUX), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    type(pipe.transformer).forward = forward
    init = randn_tensor((1, 16, 8, 8), generator=torch.Generator().manual_seed(7800), dtype=torch.float32)
    packed = FluxPipeline._pack_latents(init, 1, 16, 8, 8)
    steps = 12
    tensors = {"noise": init}
    runs = []
    # A threshold of 0 never reuses: that run is the uncached one, its modulated inputs the
    # reference for the model's probe.
    for thr in [0.0, 0.1, 0.25, 0.6, 1.5]:
        latents, rule = run(pipe, thr, packed, prompt, steps)
        key = f"latents_{thr}"
        tensors[key] = latents
        if thr == 0.0:
            for i, m in enumerate(rule.modulated):
                tensors[f"modulated_{i}"] = m
        runs.append(dict(threshold=thr, latents=key, calls=rule.calls))
        print(f"thr {thr}: reused calls {[i for i, (c, _) in enumerate(rule.calls) if not c]}")
    meta = {
        "produced_by": "tools/make_teacache_traces.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "prompt": json.dumps(prompt),
        "steps": json.dumps(steps),
        "coefficients": json.dumps(FLUX_COEFFICIENTS),
        "runs": json.dumps(runs),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
