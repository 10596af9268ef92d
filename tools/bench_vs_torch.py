"""Side by side on the CPU: PyTorch (diffusers' DiT, cache-dit's DBCache) and the project's
engine on the same weights and the same starting latent, interleaved in one session.

For each size (``tiny``: 10 blocks, 128 wide, 256 tokens, 4.8 M parameters; ``s2``: DiT-S/2;
``xl2``: DiT-XL/2 at 256 px) it builds a seeded diffusers ``DiTTransformer2DModel`` (random
weights shaped as ``tools/make_cache_traces.py``'s trace model: the timestep MLPs see only the
slow frequencies and the output has a skip path, so that the first block's residual settles
along the trajectory as a trained model's does and DBCache caches steps; the weights do not
change the work, so timings hold for real checkpoints of the same size), saves it, and starts
``cachedit bench-serve`` on it once per thread count (``RAYON_NUM_THREADS``). Then, round by
round, for every thread count, it times on both engines (torch with ``torch.set_num_threads``):

* one forward of a CFG batch of 2 (class 1 and the null class, timestep 500);
* a whole uncached run: 25 DPM-Solver++ steps with batched CFG 4 (``DiTTracePipeline``);
* the same run with cache-dit's DBCache (F1B0 R0.12 W4, ``BASE_CACHE`` of the trace script).

The engine that goes first alternates every round. Each figure is the median over the rounds
with its range, wall time and process CPU time (all threads). The two engines' final latents
are compared and so are their cached steps, so the table compares the same work. With
``--profile`` the project's server is sampled by ``perf`` during extra uncached runs and the
samples are grouped by kernel.

Writes the BENCHMARKS.md section ``vs-torch`` (``--write``) and the raw numbers as JSON
(``--json``). Run from the repository root after ``cargo build --release -p cachedit``:

    /work/.fixvenv/bin/python tools/bench_vs_torch.py --write BENCHMARKS.md

Versions: those of ``tools/requirements-fixtures.txt`` (torch 2.15.0, diffusers 0.42.1,
cache-dit 1.5.3). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import cache_dit  # noqa: E402
import diffusers  # noqa: E402
from cache_dit import DBCacheConfig  # noqa: E402

import make_cache_traces as traces  # noqa: E402

SIZES = {
    "tiny": ("tiny: 10 blocks, 128 wide (2×64), latent 32×32×4, patch 2 (256 tokens)",
             dict(num_attention_heads=2, attention_head_dim=64, num_layers=10)),
    "s2": ("DiT-S/2: 12 blocks, 384 wide (6×64), 256 tokens",
           dict(num_attention_heads=6, attention_head_dim=64, num_layers=12)),
    "xl2": ("DiT-XL/2: 28 blocks, 1152 wide (16×72), 256 tokens",
            dict(num_attention_heads=16, attention_head_dim=72, num_layers=28)),
}
BASE = dict(in_channels=4, out_channels=8, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
STEPS, GUIDANCE, CLASS = 25, 4.0, 1
CACHE = traces.BASE_CACHE  # F1B0 R0.12 W4, unlimited continuous


def build(size: str, folder: Path) -> int:
    config = dict(BASE, **SIZES[size][1])
    model = traces.build_trace_model(config, seed=11)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


class Server:
    """One ``cachedit bench-serve`` process with a fixed thread count."""

    def __init__(self, binary: Path, model: Path, threads: int):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [str(binary), "bench-serve", "--model", str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self._read()
        assert ready.get("ready"), ready

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench-serve ended")
        return json.loads(line)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def timed(fn):
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - wall0) * 1e3, (time.process_time() - cpu0) * 1e3


class Torch:
    """The same work in PyTorch: the forward and whole runs, plain and with cache-dit."""

    def __init__(self, folder: Path, noise: torch.Tensor):
        self.noise = noise
        self.plain = traces.DiTTracePipeline(
            transformer=diffusers.DiTTransformer2DModel.from_pretrained(str(folder)).eval(),
            scheduler=traces.SCHEDULERS["dpm++2m"]())
        self.cached = traces.DiTTracePipeline(
            transformer=diffusers.DiTTransformer2DModel.from_pretrained(str(folder)).eval(),
            scheduler=traces.SCHEDULERS["dpm++2m"]())
        for pipe in (self.plain, self.cached):
            pipe.set_progress_bar_config(disable=True)
        cache_dit.enable_cache(self.cached, cache_config=DBCacheConfig(**CACHE))
        model = self.plain.transformer
        self.x = torch.cat([noise, noise])
        self.t = torch.tensor([500.0, 500.0])
        self.y = torch.tensor([CLASS, model.config.num_embeds_ada_norm])

    @torch.no_grad()
    def forward(self):
        return self.plain.transformer(self.x, timestep=self.t, class_labels=self.y).sample

    @torch.no_grad()
    def run(self, cached: bool):
        pipe = self.cached if cached else self.plain
        latents = pipe(self.noise, CLASS, GUIDANCE, STEPS)
        steps = None
        if cached:
            stats = [s for s in cache_dit.summary(pipe, logging=False) if s.cache_options]
            steps = sorted(stats[0].cached_steps)
        return latents, steps


def spread(values):
    return dict(median=statistics.median(values), min=min(values), max=max(values))


def measure(size, args, binary, work: Path):
    folder = work / size
    params = build(size, folder)
    noise = traces.noise_for(SimpleNamespace(in_channels=BASE["in_channels"],
                                             sample_size=BASE["sample_size"]), 7)
    np.save(work / f"{size}_noise.npy", noise.numpy())
    noise_path = str(work / f"{size}_noise.npy")
    tw = Torch(folder, noise)
    servers = {t: Server(binary, folder, t) for t in args.threads}
    info = servers[args.threads[0]].ask(op="info")
    kinds = ["forward"] + ([] if size in args.forward_only else ["uncached", "cached"])
    samples = {(e, t, k): dict(wall=[], cpu=[]) for e in ("torch", "project")
               for t in args.threads for k in kinds}
    checks = {}

    def torch_once(t, kind):
        torch.set_num_threads(t)
        if kind == "forward":
            _, wall, cpu = timed(tw.forward)
            return wall, cpu, None
        (latents, steps), wall, cpu = timed(lambda: tw.run(kind == "cached"))
        return wall, cpu, (latents, steps)

    def project_once(t, kind):
        server = servers[t]
        if kind == "forward":
            r = server.ask(op="forward", repeats=1, noise=noise_path)
            return r["wall_ms"][0], r["cpu_ms"][0], None
        out = str(work / f"{size}_{kind}_{t}.npy")
        r = server.ask(op="sample", steps=STEPS, guidance=GUIDANCE, class_label=CLASS,
                       noise=noise_path, out=out,
                       cache=None if kind == "uncached" else dict(
                           fn=CACHE["Fn_compute_blocks"], bn=CACHE["Bn_compute_blocks"],
                           threshold=CACHE["residual_diff_threshold"],
                           warmup=CACHE["max_warmup_steps"],
                           max_continuous=CACHE["max_continuous_cached_steps"]))
        return r["wall_ms"][0], r["cpu_ms"][0], (np.load(out), sorted(set(r["cached_steps"])))

    # Warm-up: one of each on both engines and thread counts (allocators, caches, packing).
    for t in args.threads:
        for kind in kinds:
            torch_once(t, kind)
            project_once(t, kind)
    for r in range(args.rounds):
        for t in args.threads:
            for kind in kinds:
                order = [("torch", torch_once), ("project", project_once)]
                if r % 2:
                    order.reverse()
                results = {}
                for engine, once in order:
                    time.sleep(0.05)  # let the other engine's idle threads go to sleep
                    wall, cpu, out = once(t, kind)
                    samples[(engine, t, kind)]["wall"].append(wall)
                    samples[(engine, t, kind)]["cpu"].append(cpu)
                    results[engine] = out
                if kind != "forward" and (kind, t) not in checks:
                    (tl, ts), (pl, ps) = results["torch"], results["project"]
                    tl = tl.numpy()
                    err = float(np.abs(tl - pl).max() / (tl.max() - tl.min()))
                    checks[(kind, t)] = dict(latent_err=err, torch_cached=ts, project_cached=ps)
                print(f"{size} round {r + 1}/{args.rounds} threads {t} {kind}: "
                      f"torch {samples[('torch', t, kind)]['wall'][-1]:.0f} ms, "
                      f"project {samples[('project', t, kind)]['wall'][-1]:.0f} ms", flush=True)
    profile = None
    if args.profile and shutil.which("perf") and size in args.profile:
        profile = perf_profile(servers[1] if 1 in servers else servers[args.threads[0]],
                               noise_path, work, size, kinds)
    for s in servers.values():
        s.close()
    flops = forward_flops(dict(BASE, **SIZES[size][1]))
    return dict(size=size, label=SIZES[size][0], params=params, info=info, flops=flops,
                samples={f"{e}|{t}|{k}": v for (e, t, k), v in samples.items()},
                checks={f"{k}|{t}": v for (k, t), v in checks.items()}, profile=profile)


def forward_flops(cfg) -> float:
    """Multiply-adds ×2 of one forward of the CFG batch of 2 (blocks and embedder MLPs)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n = (cfg["sample_size"] // cfg["patch_size"]) ** 2
    rows = 2 * n
    per_block = 2 * rows * d * d * 4 + 2 * rows * d * 4 * d * 2 + 2 * 2 * (2 * n * n * d)
    per_block += 2 * 2 * (256 * d + d * d + d * 6 * d)  # conditioning MLPs and adaLN
    return cfg["num_layers"] * per_block


PERF_GROUPS = [
    ("gemm (matrix products)", re.compile(r"gemm|microkernel")),
    ("softmax (attention)", re.compile(r"softmax")),
    ("tanh-GELU", re.compile(r"gelu")),
    ("LayerNorm + modulate", re.compile(r"layer_norm")),
    ("gated residuals", re.compile(r"gated_residual")),
    ("memory (copy, zero, alloc, page faults)", re.compile(
        r"mem(cpy|move|set)|malloc|free|alloc|page|clear_page|copy_from_slice|split_rows")),
    ("candle ops (embedding, conditioning, sampler)", re.compile(r"candle|binary_map|unary_map|reduce")),
]


def perf_profile(server, noise_path, work, size, kinds):
    data = work / f"{size}.perf"
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-o", str(data), "-p",
                            str(server.proc.pid)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    for _ in range(2):
        if "uncached" in kinds:
            server.ask(op="sample", steps=STEPS, guidance=GUIDANCE, class_label=CLASS,
                       noise=noise_path, cache=None)
        else:
            server.ask(op="forward", repeats=3, noise=noise_path)
    rec.send_signal(2)
    rec.wait()
    report = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort",
                             "symbol", "--stdio"], capture_output=True, text=True).stdout
    totals = {name: 0.0 for name, _ in PERF_GROUPS}
    totals["other"] = 0.0
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\S+\s+(.*)", line)
        if not m:
            continue
        share, symbol = float(m.group(1)), m.group(2)
        for name, pattern in PERF_GROUPS:
            if pattern.search(symbol):
                totals[name] += share
                break
        else:
            totals["other"] += share
    return totals


def table(results, args) -> str:
    lines = []
    first = results[0]["info"]
    lines.append(
        f"Machine: {platform.processor() or 'x86_64'} — `{cpu_name()}`, {os.cpu_count()} cores; the "
        f"project's kernels ran with **{first['isa']}**; measured one-thread FMA peak "
        f"{first['fma_peak_gflops']:.1f} GFLOP/s. torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), diffusers "
        f"{diffusers.__version__}, cache-dit {cache_dit.__version__}. Seeded random weights "
        f"(timing only). {args.rounds} interleaved rounds after a warm-up; median (min–max) of "
        f"wall ms, median CPU ms (all threads). Speed ratio = torch median ÷ project median "
        f"(above 1: the project is faster). Whole runs: {STEPS} DPM-Solver++ steps, batched CFG "
        f"{GUIDANCE:g}; cached = cache-dit DBCache F1B0 R0.12 W4 and the project's DBCache with "
        f"the same knobs.\n")
    lines.append("| size | threads | work | torch wall ms | torch CPU ms | project wall ms | "
                 "project CPU ms | speed ratio | project GFLOP/s (% of peak × threads) |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for res in results:
        peak = res["info"]["fma_peak_gflops"]
        for t in args.threads:
            for kind in ("forward", "uncached", "cached"):
                key_t, key_p = f"torch|{t}|{kind}", f"project|{t}|{kind}"
                if key_t not in res["samples"]:
                    continue
                st, sp = res["samples"][key_t], res["samples"][key_p]
                wt, wp = spread(st["wall"]), spread(sp["wall"])
                ratio = wt["median"] / wp["median"]
                rate = ""
                if kind != "cached":
                    flops = res["flops"] * (1 if kind == "forward" else STEPS)
                    gf = flops / (wp["median"] / 1e3) / 1e9
                    rate = f"{gf:.1f} ({100 * gf / (peak * t):.0f} %)"
                lines.append(
                    f"| {res['size']} | {t} | {kind} | {wt['median']:.1f} ({wt['min']:.0f}–{wt['max']:.0f}) | "
                    f"{statistics.median(st['cpu']):.0f} | {wp['median']:.1f} ({wp['min']:.0f}–{wp['max']:.0f}) | "
                    f"{statistics.median(sp['cpu']):.0f} | **{ratio:.2f}×** | {rate} |")
    lines.append("")
    lines.append("Same work: the final latents of both engines and the steps DBCache cached.\n")
    lines.append("| size | run | threads | max \\|Δ latents\\| / range | torch cached steps | project cached steps |")
    lines.append("|---|---|---:|---:|---|---|")
    for res in results:
        for key, c in res["checks"].items():
            kind, t = key.split("|")
            lines.append(f"| {res['size']} | {kind} | {t} | {c['latent_err']:.1e} | "
                         f"{c['torch_cached'] or '–'} | {c['project_cached'] or '–'} |")
    profiled = [r for r in results if r["profile"]]
    if profiled:
        lines.append("")
        lines.append("Where the project's time goes (`perf` samples of the server during uncached "
                     "runs, grouped by symbol):\n")
        lines.append("| size | " + " | ".join(n for n, _ in PERF_GROUPS) + " | other |")
        lines.append("|---|" + "---:|" * (len(PERF_GROUPS) + 1))
        for r in profiled:
            p = r["profile"]
            lines.append(f"| {r['size']} | " + " | ".join(f"{p[n]:.1f} %" for n, _ in PERF_GROUPS)
                         + f" | {p['other']:.1f} % |")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_section(path: Path, body: str, command: str):
    start, end = "<!-- bench:vs-torch:start -->", "<!-- bench:vs-torch:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{start}\n## Side by side with PyTorch (CPU)\n\n{body}\nReproduce: `{command}`\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,s2,xl2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--forward-only", default="xl2", help="sizes timed by the forward only")
    ap.add_argument("--profile", default="tiny,s2,xl2", help="sizes to profile with perf")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "cachedit"))
    ap.add_argument("--write", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.forward_only = [s for s in args.forward_only.split(",") if s]
    args.profile = [s for s in args.profile.split(",") if s]
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_vs_torch_") as tmp:
        for size in args.sizes:
            results.append(measure(size, args, Path(args.bin), Path(tmp)))
    body = table(results, args)
    print(body)
    command = "/work/.fixvenv/bin/python tools/bench_vs_torch.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write:
        write_section(args.write, body, command.strip())
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
