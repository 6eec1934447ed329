"""Benchmark results (results/benchmarks/*.json, written by `make bench`) -> tables and a figure of
throughput against GMACs per preset, under reports/benchmarks/. pandas/seaborn only; never torch.

Run by Snakemake (`script:`) or by hand: `python workflow/scripts/benchmark_report.py [RESULTS] [OUT]`.
The newest file of each machine is shown; older ones stay in the long CSV.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster or CI machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

RESULTS_DIR, OUT_DIR = "results/benchmarks", "reports/benchmarks"
OUTPUTS = {"md": "benchmarks.md", "csv": "benchmarks.csv", "figure": "throughput_vs_gmacs.png"}
MACHINE_KEYS = ("machine", "gpu", "cuda", "torch", "git_commit", "matmul_peak_tflops")


def load_results(paths) -> pd.DataFrame:
    """One row per benchmark: its extra_info, timing statistics, the machine and the file it came from."""
    rows = []
    for path in sorted(map(Path, paths)):
        data = json.loads(path.read_text())
        machine = data.get("machine_info", {}).get("dimr", {})
        for b in data.get("benchmarks", []):
            row = {"file": path.name, "datetime": data.get("datetime"), "name": b["name"],
                   "group": b.get("group")}
            row.update({k: machine.get(k) for k in MACHINE_KEYS})
            row.update({f"time_{k}": b["stats"][k] for k in ("median", "mean", "stddev", "min", "rounds")})
            row.update(b.get("extra_info", {}))
            rows.append(row)
    if not rows:
        raise SystemExit(f"benchmark_report: no benchmarks in {[str(p) for p in paths]}; "
                         "run `make bench` first")
    return pd.DataFrame(rows)


def newest_per_machine(df: pd.DataFrame) -> pd.DataFrame:
    newest = df.groupby("machine")["datetime"].transform("max")
    return df[df["datetime"] == newest]


# Columns of each table: (source column, header, format).
TABLES = {
    "train": ("Training step (forward, backward, AdamW, EMA)", [
        ("machine", "Machine", "s"), ("preset", "Preset", "s"), ("compiled", "Compiled", "s"),
        ("precision", "Precision", "s"), ("batch", "Batch", "d"), ("gmacs", "GMACs", ".3g"),
        ("images_per_s", "Images/s", ".1f"), ("tflops", "TFLOP/s", ".3f"), ("mfu", "MFU", ".1%"),
        ("peak_memory_gib", "Peak memory (GiB)", ".1f")]),
    "sample": ("Sampling (`generate_images`)", [
        ("machine", "Machine", "s"), ("preset", "Preset", "s"), ("sampler", "Sampler", "s"),
        ("steps", "Steps", "d"), ("nfe", "NFE", "d"), ("batch", "Batch", "d"), ("guidance", "Guidance", "g"),
        ("images_per_s", "Images/s", ".2f"), ("s_per_nfe", "ms per NFE", "ms"),
        ("peak_memory_gib", "Peak memory (GiB)", ".1f")]),
    "extract": ("Feature extraction (`fidelity.extract`)", [
        ("machine", "Machine", "s"), ("extractor", "Extractor", "s"), ("batch", "Batch", "d"),
        ("image_size", "Image size", "d"), ("images_per_s", "Images/s", ".0f")]),
    "fid": ("FID from a pair of statistics (`fid_from_stats`)", [
        ("machine", "Machine", "s"), ("feature_dim", "Feature dim", "d"), ("fid_s", "Seconds", ".3f")]),
}


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if spec == "ms":
        return f"{1000 * value:.1f}"
    if spec == "d":
        return str(int(value))
    if spec == "s":
        return str(value)
    return format(value, spec)


def table(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The table of one benchmark kind, formatted for people (the CSV keeps the raw numbers)."""
    _, cols = TABLES[kind]
    rows = df[df["kind"] == kind]
    return pd.DataFrame({header: [fmt(v, spec) for v in rows[col]] if col in rows else ["–"] * len(rows)
                         for col, header, spec in cols})


def markdown(df: pd.DataFrame) -> str:
    machines = df.drop_duplicates("machine")
    lines = ["# Throughput benchmarks", ""]
    for _, m in machines.iterrows():
        peak = m.get("matmul_peak_tflops")
        peak = f"; large matmul {peak:.2f} TFLOP/s (MFU's denominator)" if pd.notna(peak) else ""
        lines.append(f"- **{m['machine']}**: GPU {m['gpu'] or 'none'}, CUDA {m['cuda'] or '–'}, "
                     f"torch {m['torch']}, commit {m['git_commit']}, {m['datetime']}{peak}")
    for kind, (title, _) in TABLES.items():
        if (df["kind"] == kind).any():
            align = ["left" if spec == "s" else "right" for _, _, spec in TABLES[kind][1]]
            lines += ["", f"## {title}", "",
                      table(df, kind).to_markdown(index=False, disable_numparse=True, colalign=align)]
    return "\n".join(lines) + "\n"


def throughput_figure(df: pd.DataFrame, path):
    """Training images/s and sampling image-evaluations/s against GMACs, one point per preset and machine."""
    train = df[df["kind"] == "train"].copy()
    if "compiled" in train:  # the faster of eager and compiled per preset
        train = train.sort_values("images_per_s").drop_duplicates(["machine", "preset"], keep="last")
    sample = df[df["kind"] == "sample"].copy()
    if not sample.empty:
        sample["evals_per_s"] = 1 / sample["s_per_image_eval"]
        sample = sample.sort_values("evals_per_s").drop_duplicates(["machine", "preset"], keep="last")
    panels = [(train, "images_per_s", "training images/s"),
              (sample, "evals_per_s", "sampling image-evaluations/s")]
    panels = [p for p in panels if not p[0].empty]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (data, y, label) in zip(axes[0], panels):
        sns.scatterplot(data=data, x="gmacs", y=y, hue="preset", style="machine", s=70, ax=ax)
        for _, r in data.iterrows():
            ax.annotate(r["preset"], (r["gmacs"], r[y]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="GMACs per image (forward pass)", ylabel=label, title=label)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def make_report(paths, out: dict) -> pd.DataFrame:
    """Write the long CSV (every file), and the Markdown tables and figure of the newest file per machine."""
    df = load_results(paths)
    for p in out.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out["csv"], index=False)
    shown = newest_per_machine(df)
    Path(out["md"]).write_text(markdown(shown))
    throughput_figure(shown, out["figure"])
    return shown


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else RESULTS_DIR)
    out_dir = Path(argv[1] if len(argv) > 1 else OUT_DIR)
    make_report(sorted(results.glob("*.json")), {k: out_dir / v for k, v in OUTPUTS.items()})
    print(f"benchmark report -> {out_dir}")
    return 0


if "snakemake" in globals():
    make_report(snakemake.input, {k: snakemake.output[k] for k in OUTPUTS})  # noqa: F821
    with open(snakemake.log[0], "w") as f:  # noqa: F821
        print("\n".join(snakemake.output), file=f)  # noqa: F821
elif __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
