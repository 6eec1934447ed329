"""A study's sampling sweep: FID per (variant, sweep point) with its interval over seeds, the value chosen
per variant where the study selects one, and two figures (FID against network evaluations, FID against
the guidance scale). Reads only the long results table. pandas/seaborn only; never torch.

Selection never sees the reported numbers: the chosen value is the one with the lowest mean FID on the
"select" evaluations (the same networks and points, on sample seeds disjoint from the reported ones); the
table then reports that point's FID from the "sweep" evaluations (DiMR's eval.py instead reports the best
of the guidance scales it tried on the very samples it reports).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from tables import LEVEL, interval_cell, intervals, number  # noqa: E402

GUIDANCE, STEPS = "sample.sampler.guidance.scale", "sample.sampler.steps"
DPI = 150


def sweep_fids(df: pd.DataFrame, keys: list[str], role: str) -> pd.DataFrame:
    """FID rows of the evaluations of `role` (sweep: reported; select: for choosing only)."""
    fid = df[(df["eval"] == role) & (df["metric"] == "fid")].copy()
    for k in keys:
        fid[k] = as_written(fid[f"sweep.{k}"])
    return fid


def as_written(values: pd.Series) -> pd.Series:
    """Swept values as the study wrote them: steps 8, not the 8.0 a CSV column with gaps reads back."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and (numeric % 1 == 0).all():
        return numeric.astype(int)
    return values


def summary(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per variant × point of the reported sweep: mean FID, t interval over seeds, n, NFE."""
    fid = sweep_fids(df, keys, "sweep")
    group = ["order", "variant", "label", *keys]
    out = intervals(fid, keys=tuple(group))
    nfe = fid.groupby(group)["nfe"].first().reset_index()
    return out.merge(nfe, on=group).sort_values(group).reset_index(drop=True)


def select(df: pd.DataFrame, keys: list[str], key: str) -> pd.DataFrame:
    """Per variant and combination of the other swept keys: the value of `key` with the lowest mean FID on
    the selection seeds, its selection FID, and the reported FID (other seeds) of that point."""
    others = [k for k in keys if k != key]
    chosen = (sweep_fids(df, keys, "select").groupby(["order", "variant", "label", *keys])["value"].mean()
              .reset_index().sort_values("value", kind="stable")
              .groupby(["order", "variant", "label", *others], dropna=False).head(1)
              .rename(columns={"value": "select_fid"}))
    reported = summary(df, keys)
    return chosen.merge(reported, on=["order", "variant", "label", *keys], how="left").sort_values(
        ["order", *others]).reset_index(drop=True)


def short(key: str) -> str:
    return {GUIDANCE: "guidance s", STEPS: "steps"}.get(key, key.removeprefix("sample."))


def markdown(summ: pd.DataFrame, chosen: pd.DataFrame | None, keys: list[str], sel: dict | None,
             title: str) -> str:
    lines = [f"## {title}", "",
             f"FID per network and sampling setting: mean over seeds [{LEVEL:.0%} t interval] (n seeds); "
             "each network trained once and evaluated at every point.", "",
             "| variant | " + " | ".join(short(k) for k in keys) + " | NFE | FID | n |",
             "|---" * (len(keys) + 4) + "|"]
    for _, r in summ.iterrows():
        lines.append(f"| {r['label']} | " + " | ".join(str(r[k]) for k in keys)
                     + f" | {number(r['nfe'], '.0f')} | {interval_cell(r['mean'], r['lo'], r['hi'], 2)} | "
                     f"{r['n']} |")
    if chosen is not None and sel:
        key = sel["key"]
        others = [k for k in keys if k != key]
        lines += ["", f"**Selected {short(key)}** per variant"
                  + (f" and {', '.join(short(k) for k in others)}" if others else "")
                  + f": the lowest mean FID on sample seeds from {sel['seed_start']:,} (the selection set); "
                  "the FID beside it is that setting's on the reported sample seeds, which the selection "
                  "never saw.", "",
                  "| variant | " + " | ".join(short(k) for k in others) + (" | " if others else "")
                  + f"selected {short(key)} | FID on selection seeds | reported FID | n |",
                  "|---" * (len(others) + 5) + "|"]
        for _, r in chosen.iterrows():
            lines.append(f"| {r['label']} | " + "".join(f"{r[k]} | " for k in others)
                         + f"{r[key]} | {number(r['select_fid'], '.2f')} | "
                         + f"{interval_cell(r['mean'], r['lo'], r['hi'], 2)} | {number(r['n'], '.0f')} |")
    return "\n".join(lines) + "\n"


def line_figure(summ: pd.DataFrame, x: str, style_key: str | None, xlabel: str, title: str, path,
                log_x: bool = False):
    """Mean FID against `x`, one colour per variant (one line style per `style_key` value), t intervals."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if summ.empty or x not in summ.columns:
        ax.text(0.5, 0.5, f"{xlabel} not swept", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        palette = dict(zip(summ["label"].unique(), sns.color_palette(n_colors=summ["label"].nunique())))
        summ = summ.assign(_style=summ[style_key] if style_key else "")
        styles = sorted(summ["_style"].unique())
        marks = ["o", "s", "^", "D", "v"]
        for (label, sv), g in summ.groupby(["label", "_style"], sort=False):
            g = g.sort_values(x)
            i = styles.index(sv)
            name = f"{label}, {short(style_key)} {sv}" if style_key and len(styles) > 1 else label
            # FID is positive: on a log axis an interval reaching below 0 (two seeds far apart) is cut at
            # the axis instead of flattening every line.
            floor = summ["mean"].min() / 3
            lo = g["lo"].fillna(g["mean"]).clip(lower=floor)
            err = [g["mean"] - lo, (g["hi"] - g["mean"]).fillna(0)]
            ax.errorbar(g[x], g["mean"], yerr=err, color=palette[label], marker=marks[i % len(marks)],
                        linestyle=["-", "--", ":", "-."][i % 4], capsize=3, label=name)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"FID (mean, {LEVEL:.0%} t interval over seeds; log)")
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main(snakemake):
    df = pd.read_csv(snakemake.input.table)
    keys, sel = snakemake.params.sweep["keys"], snakemake.params.sweep["select"]
    study = snakemake.params.study
    title = f"{study['title']} ({study['scale']})"
    summ = summary(df, keys)
    chosen = select(df, keys, sel["key"]) if sel else None
    summ.to_csv(snakemake.output.summary, index=False)
    Path(snakemake.output.md).write_text(markdown(summ, chosen, keys, sel, study["title"]))
    sns.set_theme(style="whitegrid", context="notebook")
    line_figure(summ, "nfe", GUIDANCE if GUIDANCE in keys else None, "network evaluations per image (NFE)",
                f"{title}: FID against NFE", snakemake.output.nfe, log_x=True)
    line_figure(summ, GUIDANCE if GUIDANCE in keys else "-", STEPS if STEPS in keys else None,
                "guidance scale s (w = 1 + s)", f"{title}: FID against guidance", snakemake.output.guidance)
    with open(snakemake.log[0], "w") as f:
        print(f"{len(summ)} sweep points -> {snakemake.output.md}", file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
