#!/usr/bin/env python3
"""Plots the loss log of `cachedit train` (RUN/loss.csv: step,loss) for the model card.

Usage: python tools/plot_loss.py runs/scenes-dit/loss.csv models/scenes-dit/loss.png
Needs matplotlib (pip install matplotlib); the plot is documentation only, nothing at run or
test time reads it.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def moving_average(values, window):
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main(src, dst):
    steps, losses = [], []
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
    if not steps:
        sys.exit(f"{src}: no rows")
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(steps, losses, color="#9ab", linewidth=0.5, label="per step")
    ax.plot(steps, moving_average(losses, 100), color="#c33", linewidth=1.6,
            label="mean of 100 steps")
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step (batch of 32 scenes)")
    ax.set_ylabel("Min-SNR-5 weighted ε-MSE")
    ax.set_title("scenes-dit training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dst)
    print(f"wrote {dst} ({len(steps)} steps, final mean {moving_average(losses, 100)[-1]:.4f})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
