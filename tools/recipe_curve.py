"""FID and conditional accuracy against training CPU-minutes per run, from a finished tiny study.

    python tools/recipe_curve.py results/table1_curves.csv docs/tiny_curve.png

Reads the curve table (`results/<study>_curves.csv`) and each run's `training_log.jsonl`, whose
lines carry the window's images per second: the training seconds at kimg k are the sum over the
windows up to k of (window images / images per second). Prints a Markdown table and draws the figure.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def seconds_at(log_path: Path, kimgs) -> list[float]:
    """Training seconds at each kimg of `kimgs`, from the log's per-window throughput."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    k = np.array([0.0] + [e["kimg"] for e in lines])
    dt = [(b - a) * 1000 / e["images_per_s"] for a, b, e in zip(k[:-1], k[1:], lines)]
    t = np.concatenate([[0.0], np.cumsum(dt)])
    return [float(np.interp(x, k, t)) for x in kimgs]


def main(curves_csv, out_png):
    df = pd.read_csv(curves_csv)
    parts = []
    for run_dir, g in df.groupby("run_dir"):
        g = g.sort_values("kimg").copy()
        g["cpu_min"] = np.array(seconds_at(Path(run_dir) / "training_log.jsonl", g["kimg"])) / 60
        parts.append(g)
    df = pd.concat(parts)
    keys = ["order", "label", "kimg"]
    mean = df.groupby(keys, sort=True)[["cpu_min", "fid", "accuracy"]].mean().reset_index()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for (_, label), g in mean.groupby(["order", "label"], sort=True):
        a1.plot(g["cpu_min"], g["fid"], marker="o", label=label)
        a2.plot(g["cpu_min"], g["accuracy"], marker="o", label=label)
    n = int(df["num_samples"].iloc[0])
    a1.set(xlabel="training minutes per run (one thread)", ylabel=f"FID (N = {n})", yscale="log")
    a2.set(xlabel="training minutes per run (one thread)", ylabel="conditional accuracy")
    a2.axhline(0.1, color="grey", ls=":", lw=1)
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    print(mean.round(3).to_markdown(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
