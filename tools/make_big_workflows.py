#!/usr/bin/env python3
"""Writes machine-sized workflows for timing `cachedit validate` (BENCHMARKS.md, "Validation
at scale"): a chain of N Samplers (each one's image linked into the next one's model input, so
every link is also a type error) and a ring of N Samplers (one cycle through all of them).

Standard library only:  python3 tools/make_big_workflows.py OUT_DIR [--chain 100000] [--ring 10000]
"""
import argparse
from pathlib import Path


def workflow(n: int, ring: bool) -> str:
    nodes = [f'(id: {i}, kind: "Sampler")' for i in range(1, n + 1)]
    ends = range(1, n + 1) if ring else range(1, n)
    links = [
        f'(from: (node: {i}, port: "image"), to: (node: {i % n + 1}, port: "model"))'
        for i in ends
    ]
    return "(version: 1, nodes: [\n" + ",\n".join(nodes) + "\n], links: [\n" + ",\n".join(links) + "\n])\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--chain", type=int, default=100_000)
    ap.add_argument("--ring", type=int, default=10_000)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, n, ring in [(f"chain_{a.chain}.ron", a.chain, False), (f"ring_{a.ring}.ron", a.ring, True)]:
        path = a.out / name
        path.write_text(workflow(n, ring))
        print(f"{path}: {n} nodes, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
