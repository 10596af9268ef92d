#!/usr/bin/env python3
"""The overhead of comparing, from a `cachedit run` of a Compare workflow: the Compare node's
wall time against the sum of its runs' denoise loops (BENCHMARKS.md, "Comparing strategies").

Standard library only:  python3 tools/compare_overhead.py OUT/stats.json [...]
"""
import json
import sys

for path in sys.argv[1:]:
    stats = json.load(open(path))
    for node in stats["nodes"]:
        if node.get("comparison") is None:
            continue
        parts = sum(row["total_ms"] for row in node["comparison"])
        runs = sum(row["runs"] for row in node["comparison"])
        over = node["ms"] - parts
        print(f"{path}: Compare #{node['id']}: {node['ms']:.0f} ms for {runs} runs summing to "
              f"{parts:.0f} ms: overhead {over:.0f} ms ({100 * over / node['ms']:.2f} %)")
