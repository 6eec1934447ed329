"""Seaborn figures of a study from its long table: FID bars with seed spread, FID against GMACs, training
progress (loss and FID against training images) and the sample grids. pandas/seaborn only; never torch.
"""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster or CI machines
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 150


def fid_rows(df: pd.DataFrame) -> pd.DataFrame:
    """FID rows in study order (the figures' y axis follows the table's row order)."""
    fid = df[df["metric"] == "fid"].sort_values(["order", "seed"])
    if fid.empty:
        raise SystemExit("figures: the table has no 'fid' rows; did evaluation write metrics.fid?")
    return fid


def fid_label(df: pd.DataFrame) -> str:
    extractor = df["protocol.extractor"].dropna().unique() if "protocol.extractor" in df else []
    return f"FID ({extractor[0]} features)" if len(extractor) == 1 else "FID"


def labels_in_order(df: pd.DataFrame) -> list[str]:
    return df.drop_duplicates("variant").sort_values("order")["label"].tolist()


def fid_bars(df: pd.DataFrame, title: str, path):
    """Mean FID per variant with ± std over seeds, each seed a dot; the paper's FID at paper scale."""
    fid = fid_rows(df)
    order = labels_in_order(fid)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(order) + 1.5), layout="constrained")
    sns.barplot(data=fid, y="label", x="value", order=order, errorbar="sd", color="#9ecae1", capsize=0.2,
                ax=ax)
    sns.stripplot(data=fid, y="label", x="value", order=order, color="#08306b", size=4, ax=ax, label="seeds")
    if (fid["scale"] == "paper").all() and fid["paper_fid"].notna().any():
        paper = fid.drop_duplicates("variant")
        ax.scatter(paper["paper_fid"], [order.index(lbl) for lbl in paper["label"]], marker="D",
                   color="#e6550d", zorder=5, label="paper")
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles))  # one legend entry per name (stripplot adds one per category)
    ax.legend(keep.values(), keep.keys(), loc="best", framealpha=0.9)
    ax.set(xlabel=f"{fid_label(df)}, lower is better", ylabel="", title=title)
    save(fig, path)


def variant_means(fid: pd.DataFrame, x: str) -> pd.DataFrame:
    g = fid.groupby(["order", "label"], sort=True)
    stats = {x: g[x].first(), "mean": g["value"].mean(), "std": g["value"].std().fillna(0.0)}
    return pd.DataFrame(stats).reset_index()


def fid_vs_gmacs(df: pd.DataFrame, title: str, path):
    """Mean FID (± std over seeds) against the GMACs of one forward pass, one point per variant."""
    fid = fid_rows(df)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    if fid["gmacs"].notna().any():
        m = variant_means(fid, "gmacs")
        colors = sns.color_palette("colorblind", len(m))
        for (_, r), c in zip(m.iterrows(), colors):
            ax.errorbar(r["gmacs"], r["mean"], yerr=r["std"], fmt="o", color=c, capsize=3, label=r["label"])
        ax.legend(fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no GMACs recorded (model_info.json)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="GMACs per forward pass (batch 1)", ylabel=fid_label(df), title=title)
    save(fig, path)


def training_log(run_dir) -> pd.DataFrame:
    """The run's training_log.jsonl as a table (empty if the run left none)."""
    path = Path(run_dir) / "training_log.jsonl"
    if not path.exists():
        return pd.DataFrame()
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(lines)


def training(df: pd.DataFrame, title: str, path):
    """Left: training loss against training images (mean ± std over seeds). Right: final FID against them."""
    fid = fid_rows(df)
    runs = fid.drop_duplicates("run_dir")
    logs = [training_log(r.run_dir).assign(label=r.label, seed=r.seed) for r in runs.itertuples()]
    logs = [x for x in logs if "loss" in x]
    logs = pd.concat(logs, ignore_index=True) if logs else None
    order = labels_in_order(fid)
    colors = dict(zip(order, sns.color_palette("colorblind", len(order))))  # same colours in both panels
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    if logs is not None:
        sns.lineplot(data=logs, x="kimg", y="loss", hue="label", hue_order=order, errorbar="sd", ax=left,
                     palette=colors)
        left.set(yscale="log", xlabel="training images (kimg)", ylabel="training loss", title="training loss")
        left.legend(fontsize="small", title=None)
    else:
        left.text(0.5, 0.5, "no training_log.jsonl", ha="center", transform=left.transAxes)
    m = variant_means(fid, "train_kimg")
    for _, r in m.iterrows():
        right.errorbar(r["train_kimg"], r["mean"], yerr=r["std"], fmt="o", capsize=3,
                       color=colors[r["label"]])
    right.set(xlabel="training images (kimg)", ylabel=fid_label(df), title="FID of the final network")
    fig.suptitle(title)
    save(fig, path)


def samples(grids: dict[str, str], title: str, path):
    """The sample grid of each variant's first seed, side by side."""
    n = len(grids)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.3 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, grid) in zip(axes.flat, grids.items()):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(label, fontsize="medium")
    fig.suptitle(title)
    save(fig, path)


def first_seed_grids(df: pd.DataFrame) -> dict[str, str]:
    """{label: run_dir/grid.png} of the lowest seed of each variant, in study order."""
    first = df.sort_values(["order", "seed"]).drop_duplicates("variant")
    return {r.label: str(Path(r.run_dir) / "grid.png") for r in first.itertuples()}


def save(fig, path):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def make_figures(df: pd.DataFrame, title: str, out: dict):
    """Write every figure; `out` maps fid_bars, fid_vs_gmacs, training, samples to PNG paths."""
    sns.set_theme(style="whitegrid", context="notebook")
    fid_bars(df, title, out["fid_bars"])
    fid_vs_gmacs(df, title, out["fid_vs_gmacs"])
    training(df, title, out["training"])
    samples(first_seed_grids(df), title, out["samples"])


def main(snakemake):
    df = pd.read_csv(snakemake.input.table)
    study = snakemake.params.study
    make_figures(df, f"{study['title']} ({study['scale']})", dict(snakemake.output.items()))
    with open(snakemake.log[0], "w") as f:
        print("\n".join(snakemake.output), file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
