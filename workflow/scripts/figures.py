"""Seaborn figures of a study from its long tables: FID and accuracy bars with 95% t intervals over seeds
between the real-data and noise rows, FID against GMACs, FID and accuracy over training (from the curve
table) and the sample grids. Reads only its declared inputs. pandas/seaborn only; never torch.
"""

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster or CI machines
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from tables import (  # noqa: E402  (the not-learned rule and the reference rows are the table's)
    LEARNED_FACTOR,
    LEVEL,
    NOISE,
    REAL,
    intervals,
    learned_cell,
    learned_runs,
    main_rows,
    reference_value,
    runs_of,
)

DPI = 150
FIGURES = ("fid_bars", "fid_vs_gmacs", "fid_curve", "samples")  # keep in step with workflow/rules/common.smk
CHANCE = 0.1  # accuracy of guessing among Fashion-MNIST's 10 classes
REF_STYLE = {REAL: dict(color="#31a354", ls="--"), NOISE: dict(color="#de2d26", ls="--")}


def wrap(text: str, width: int) -> str:
    """Break a label into lines of at most `width` characters: a title wider than its panel is cut at
    the figure's edge, and long row labels squeeze the panels."""
    return "\n".join(textwrap.wrap(text, width)) or text


def metric_rows(df: pd.DataFrame, metric: str = "fid") -> pd.DataFrame:
    """The runs' rows of a metric in study order (the figures' rows follow the table's)."""
    rows = runs_of(df)
    rows = rows[rows["metric"] == metric].sort_values(["order", "seed"])
    if rows.empty and metric == "fid":
        raise SystemExit("figures: the table has no 'fid' rows; did evaluation write metrics.fid?")
    return rows


def fid_label(df: pd.DataFrame) -> str:
    extractor = df["protocol.extractor"].dropna().unique() if "protocol.extractor" in df else []
    return f"FID ({extractor[0]} features)" if len(extractor) == 1 else "FID"


def error_bars(m: pd.DataFrame) -> np.ndarray:
    """(2, n) distances from the mean to the interval's bounds; 0 where there is no interval."""
    return np.nan_to_num(np.vstack([m["mean"] - m["lo"], m["hi"] - m["mean"]]), nan=0.0)


def learned_by_variant(df: pd.DataFrame) -> dict[str, str]:
    """{variant: 'yes' | 'no' | 'k/n seeds' | '–'} by the tables' not-learned rule."""
    verdicts = learned_runs(df)
    runs = runs_of(df)
    return {v: learned_cell(verdicts.get(d) for d in g["run_dir"].unique())
            for v, g in runs.groupby("variant")}


def reference_lines(ax, df: pd.DataFrame, metric: str, vertical: bool, fmt: str):
    """A line per reference row (real data, noise) at its value of `metric`, labelled with it."""
    for kind in (REAL, NOISE):
        value, n = reference_value(df, kind, metric)
        if math.isnan(value):
            continue
        label = df.loc[df.get("reference") == kind, "label"].iloc[0]
        line = ax.axvline if vertical else ax.axhline
        line(value, **REF_STYLE[kind], lw=1.5, label=f"{label} ({value:{fmt}}, N = {n:.0f})")


def bar_panel(ax, df: pd.DataFrame, metric: str, learned: dict, log: bool):
    """Horizontal bars of the per-variant mean with t-interval whiskers, seeds as dots; hatched where not
    every seed learned (annotated with the verdict)."""
    rows = metric_rows(df, metric)
    m = intervals(rows)
    y = np.arange(len(m))
    pos = dict(zip(m["variant"], y))
    for i, r in enumerate(m.itertuples()):
        verdict = learned.get(r.variant, "–")
        hatch = "//" if verdict not in ("yes", "–") else None
        ax.barh(i, r.mean, color="#9ecae1", edgecolor="#3182bd", hatch=hatch, height=0.6)
        if hatch:  # above the bar, at the left edge: clear of whiskers and reference lines
            ax.text(0.01, i - 0.32, "not learned" if verdict == "no" else f"learned: {verdict}", va="bottom",
                    transform=ax.get_yaxis_transform(), fontsize="small", color="#a50f15")
    ax.errorbar(m["mean"], y, xerr=error_bars(m), fmt="none", ecolor="black", capsize=4, lw=1.2,
                label=f"{LEVEL:.0%} t interval")
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(rows))  # fixed: figures are reproducible
    ax.scatter(rows["value"], rows["variant"].map(pos) + jitter, s=14, color="#08306b", zorder=4,
               label="seeds")
    ax.set_yticks(y, [wrap(label, 34) for label in m["label"]])
    ax.invert_yaxis()  # first roadmap row on top, as in the table
    if log:
        ax.set_xscale("log")


def fid_bars(df: pd.DataFrame, title: str, path):
    """Left: FID per variant (log axis) between real data and noise. Right: conditional accuracy."""
    learned = learned_by_variant(df)
    n = runs_of(df)["variant"].nunique()
    has_acc = not metric_rows(df, "accuracy").empty
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(13 if has_acc else 7, 0.55 * n + 3.2),
                             squeeze=False, layout="constrained")
    left = axes[0, 0]
    bar_panel(left, df, "fid", learned, log=True)
    reference_lines(left, df, "fid", vertical=True, fmt=".3g")
    noise, _ = reference_value(df, NOISE)
    if not math.isnan(noise):
        left.axvline(noise / LEARNED_FACTOR, color="#de2d26", ls=":", lw=1,
                     label=f"learned threshold (noise / {LEARNED_FACTOR})")
    paper_points(left, df)
    legend_below(left)
    left.set(xlabel=f"{fid_label(df)}, lower is better (log scale)", ylabel="", title="FID")
    if has_acc:
        right = axes[0, 1]
        bar_panel(right, df, "accuracy", learned, log=False)
        if same_rows(df, "fid", "accuracy"):  # the left panel's labels name the right's bars too
            right.tick_params(labelleft=False)
        reference_lines(right, df, "accuracy", vertical=True, fmt=".3f")
        right.axvline(CHANCE, color="grey", ls=":", lw=1.2, label=f"chance ({CHANCE})")
        right.set(xlim=(0, 1), xlabel="conditional accuracy, higher is better", ylabel="",
                  title="accuracy (feature net's class = the label)")
        legend_below(right)
    fig.suptitle(wrap(title, 110))
    save(fig, path)


def same_rows(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether metrics a and b have bars for the same variants in the same order."""
    return metric_rows(df, a)["variant"].unique().tolist() == metric_rows(df, b)["variant"].unique().tolist()


def legend_below(ax):
    """The legend under the panel: inside, it would hide bars or seeds."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize="small", frameon=False)


def paper_points(ax, df: pd.DataFrame):
    """The paper's FID of each variant, at the paper scale only (elsewhere the numbers do not compare)."""
    fid = metric_rows(df)
    if not ((fid["scale"] == "paper").all() and fid["paper_fid"].notna().any()):
        return
    order = fid.drop_duplicates("variant")["variant"].tolist()
    paper = fid.drop_duplicates("variant")
    ax.scatter(paper["paper_fid"], [order.index(v) for v in paper["variant"]], marker="D", color="#e6550d",
               zorder=5, label="paper")


def fid_vs_gmacs(df: pd.DataFrame, title: str, path):
    """Mean FID with its t interval against the GMACs of one forward pass, one point per variant."""
    fid = metric_rows(df)
    fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
    if fid["gmacs"].notna().any():
        m = intervals(fid, keys=("order", "variant", "label", "gmacs"))
        colors = sns.color_palette("colorblind", len(m))
        for (i, r), c in zip(m.iterrows(), colors):
            ax.errorbar(r["gmacs"], r["mean"], yerr=error_bars(m.loc[[i]]), fmt="o", color=c, capsize=3,
                        label=wrap(r["label"], 40))
        reference_lines(ax, df, "fid", vertical=False, fmt=".3g")
        ax.set_yscale("log")  # real data and noise are orders of magnitude apart
        # a figure legend: constrained layout makes room for it (an axes' legend below is cut off)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small",
                   frameon=False)
    else:
        ax.text(0.5, 0.5, "no GMACs recorded (model_info.json)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="GMACs per forward pass (batch 1)", ylabel=f"{fid_label(df)} (log scale)",
           title=wrap(title, 60))
    save(fig, path)


def curve_panel(ax, curves: pd.DataFrame, value: str, colors: dict):
    """Mean over seeds of `value` against kimg per variant, with its t-interval band."""
    m = intervals(curves.dropna(subset=[value]), value=value, keys=("order", "label", "kimg"))
    for label, g in m.groupby("label", sort=False):
        g = g.sort_values("kimg")
        ax.plot(g["kimg"], g["mean"], marker="o", ms=3, color=colors[label], label=label)
        ax.fill_between(g["kimg"], g["lo"], g["hi"], color=colors[label], alpha=0.2, lw=0)


def fid_curve(curves: pd.DataFrame | None, df: pd.DataFrame, title: str, path):
    """FID (left, log axis) and conditional accuracy (right) of the training snapshots against kimg."""
    order = metric_rows(df).drop_duplicates("variant")["label"].tolist()
    colors = dict(zip(order, sns.color_palette("colorblind", len(order))))  # same colours in both panels
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), layout="constrained")
    if curves is None or curves.empty:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no training curves (curve.json)", ha="center", transform=ax.transAxes)
    else:
        curves = curves.sort_values(["order", "seed", "kimg"])
        n = ", ".join(sorted({f"{x:.0f}" for x in curves["num_samples"].dropna()}))
        curve_panel(left, curves, "fid", colors)
        left.set(yscale="log", xlabel="training images (kimg)", ylabel=f"{fid_label(df)} (log scale)",
                 title=f"FID over training (N = {n})")
        if curves["accuracy"].notna().any():
            curve_panel(right, curves, "accuracy", colors)
            right.axhline(CHANCE, color="grey", ls=":", lw=1.2, label=f"chance ({CHANCE})")
        # one legend for both panels (same colours), under them: inside, it hides the curves
        handles, labels = left.get_legend_handles_labels()
        extra = [(h, lab) for h, lab in zip(*right.get_legend_handles_labels()) if lab not in labels]
        fig.legend(handles + [h for h, _ in extra], labels + [lab for _, lab in extra],
                   loc="outside lower center", ncol=3, fontsize="small", frameon=False)
        right.set(ylim=(0, 1), xlabel="training images (kimg)", ylabel="conditional accuracy",
                  title=f"accuracy over training (N = {n})")
    fig.suptitle(wrap(f"{title}: mean over seeds, {LEVEL:.0%} t band", 110))
    save(fig, path)


def first_seed_grids(df: pd.DataFrame, grids: list[str]) -> dict[str, str]:
    """{label: grid} of the lowest seed of each variant that has a grid among `grids`, in study order."""
    by_dir = {str(Path(g).parent): str(g) for g in grids}
    runs = runs_of(df).sort_values(["order", "seed"]).drop_duplicates("run_dir")
    runs = runs[runs["run_dir"].astype(str).isin(by_dir)].drop_duplicates("variant")
    return {r.label: by_dir[str(r.run_dir)] for r in runs.itertuples()}


def samples(grids: dict[str, str], title: str, path):
    """The sample grid of each variant's first seed, side by side."""
    n = max(len(grids), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.3 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, grid) in zip(axes.flat, grids.items()):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(wrap(label, 40), fontsize="medium")
    if not grids:
        axes[0, 0].text(0.5, 0.5, "no sample grids", ha="center", transform=axes[0, 0].transAxes)
    fig.suptitle(wrap(title, 30 * cols))
    save(fig, path)


def save(fig, path):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def make_figures(df: pd.DataFrame, title: str, out: dict, grids: list[str],
                 curves: pd.DataFrame | None = None):
    """Write every figure of FIGURES to its PNG path in `out`."""
    sns.set_theme(style="whitegrid", context="notebook")
    fid_bars(df, title, out["fid_bars"])
    fid_vs_gmacs(df, title, out["fid_vs_gmacs"])
    fid_curve(curves, df, title, out["fid_curve"])
    samples(first_seed_grids(df, grids), title, out["samples"])


def main(snakemake):
    df = main_rows(pd.read_csv(snakemake.input.table))
    curves = pd.read_csv(snakemake.input.curves) if hasattr(snakemake.input, "curves") else None
    study = snakemake.params.study
    make_figures(df, f"{study['title']} ({study['scale']})", dict(snakemake.output.items()),
                 list(snakemake.input.grids), curves)
    with open(snakemake.log[0], "w") as f:
        print("\n".join(snakemake.output), file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
