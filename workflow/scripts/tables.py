"""Render a study's long table as the paper-style table, in Markdown, LaTeX and HTML: one row per variant
in study order with the mean and 95% Student-t interval over seeds of each metric, FID differences
paired by seed against the previous and the first row, the sample-noise floor of FID beside its seed
spread, whether each variant learned anything (against the uniform-noise row), and the reference rows
(real test images on top, uniform noise at the bottom). pandas/scipy only; never torch.
"""

import html
import math

import pandas as pd
from stats_intervals import contrast, paired_delta, t_interval

# Metrics shown, in column order, with the direction that is better; others stay in the CSV only.
METRICS = {"fid": "FID ↓", "accuracy": "Accuracy ↑", "is_mean": "IS ↑", "precision": "Precision ↑",
           "recall": "Recall ↑", "clean_fid_rel_diff": "clean-fid rel. diff."}
DIGITS = {"precision": 3, "recall": 3, "accuracy": 3, "clean_fid_rel_diff": 4}  # the others: 2
# What a row cost, where its metrics record it: training images of every network behind its samples
# and network evaluations per sample (both stages of a cascade or relay row).
COST_COLUMNS = {"protocol.total_kimg": "Train kimg (all stages)", "nfe": "NFE"}
LEVEL = 0.95
MARK = "*"  # after a ΔFID whose interval excludes 0
LEARNED_FACTOR = 10  # a run has learned when its FID is at least this many times below uniform noise's
NOISE, REAL = "uniform-noise", "real-test"
DASH = "–"


def is_reference(df: pd.DataFrame) -> pd.Series:
    """Rows of the reference rows (real data, noise); a table without the column has none."""
    if "reference" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["reference"].fillna("").astype(str).ne("")


def runs_of(df: pd.DataFrame) -> pd.DataFrame:
    return df[~is_reference(df)]


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's own evaluation and the references: the table's (sweep points have their own)."""
    if "eval" not in df.columns:
        return df
    return df[df["eval"].fillna("main") == "main"].reset_index(drop=True)


def reference_of(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one reference kind (empty when the study has none)."""
    return df[is_reference(df) & (df.get("reference") == kind)]


def intervals(rows: pd.DataFrame, value: str = "value", keys=("order", "variant", "label")) -> pd.DataFrame:
    """Per group of `keys`: mean, std (ddof 1), t-interval bounds (NaN for one seed) and n of `value`."""
    out = []
    for key, g in rows.groupby(list(keys), sort=True):
        mean, lo, hi, n = t_interval(g[value], LEVEL)
        out.append({**dict(zip(keys, key)), "mean": mean, "std": g[value].std(), "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(out, columns=[*keys, "mean", "std", "lo", "hi", "n"])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant and metric of the runs: mean, std (ddof 1), t interval (lo, hi), n seeds, params, GMACs."""
    runs = runs_of(df)
    per_variant = runs.groupby("variant")[["params", "gmacs", "paper_fid", "paper_params"]].first()
    return intervals(runs, keys=("order", "variant", "label", "metric")).join(per_variant, on="variant")


def number(x, fmt: str) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def interval_cell(mean: float, lo: float, hi: float, digits: int) -> str:
    """'mean [lo, hi]'; the mean alone when there is no interval (one seed)."""
    if math.isnan(mean):
        return DASH
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def delta_cell(d: dict | None, digits: int = 2) -> str:
    """Signed 'Δ [lo, hi]' with the marker where the interval excludes 0."""
    if d is None or math.isnan(d["mean"]):
        return DASH
    if math.isnan(d["lo"]):
        return f"{d['mean']:+.{digits}f}"
    mark = MARK if d["significant"] else ""
    return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]{mark}"


def by_seed(df: pd.DataFrame, variant: str, metric: str = "fid") -> dict:
    """{seed: value} of one variant's metric."""
    g = df[(df["variant"] == variant) & (df["metric"] == metric)]
    return dict(zip(g["seed"].astype(int), g["value"].astype(float)))


def sample_counts(df: pd.DataFrame) -> pd.Series:
    """N of each row: the protocol's num_samples (what the metrics saw), else the run's num_samples."""
    n = df.get("protocol.num_samples", pd.Series(float("nan"), df.index))
    return n.fillna(df["num_samples"]) if "num_samples" in df.columns else n


def reference_value(df: pd.DataFrame, kind: str, metric: str = "fid") -> tuple[float, float]:
    """(value, N) of a reference row's metric; NaN where the study has none."""
    rows = reference_of(df, kind)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        return float("nan"), float("nan")
    return float(rows["value"].iloc[0]), float(sample_counts(rows).iloc[0])


def learned_runs(df: pd.DataFrame) -> pd.Series:
    """Per run (run_dir): True/False whether its FID is ≥ LEARNED_FACTOR× below noise at the same N;
    NaN where no noise row was scored at that N (the test cannot be made)."""
    noise, noise_n = reference_value(df, NOISE)
    runs = runs_of(df)
    fid = runs[runs["metric"] == "fid"]
    same_n = sample_counts(fid) == noise_n
    verdict = (fid["value"] * LEARNED_FACTOR <= noise).astype(object).where(same_n, float("nan"))
    return pd.Series(verdict.values, index=fid["run_dir"].values)


def learned_cell(verdicts) -> str:
    """'yes' (every seed learned), 'no' (none did), 'k/n seeds' in between, '–' when not testable."""
    v = [x for x in verdicts if isinstance(x, bool)]
    if not v:
        return DASH
    k = sum(v)
    return "yes" if k == len(v) else "no" if k == 0 else f"{k}/{len(v)} seeds"


def stat(s: pd.DataFrame, metric: str, col: str, fmt: str = ".2f") -> str:
    """One statistic of a variant's summary (indexed by metric); '–' where the metric is absent."""
    return number(s.at[metric, col], fmt) if metric in s.index else DASH


def variant_rows(df: pd.DataFrame, shown: list[str]) -> list[dict]:
    """The roadmap rows, in study order, each compared with the previous and the first by paired ΔFID."""
    summary = summarize(df)
    learned = learned_runs(df)
    runs = runs_of(df)
    order = summary.drop_duplicates("variant").sort_values("order")["variant"].tolist()
    rows = []
    for i, variant in enumerate(order):
        s = summary[summary["variant"] == variant].set_index("metric")
        first = s.iloc[0]
        row = {"Variant": first["label"], "Params (M)": number(first["params"] / 1e6, ".2f"),
               "GMACs": number(first["gmacs"], ".3g")}
        for col, name in COST_COLUMNS.items():  # two-stage rows count both networks (metrics protocol)
            if col in runs.columns and runs[col].notna().any():
                values = runs.loc[runs["variant"] == variant, col].dropna()
                row[name] = number(float(values.iloc[0]) if len(values) else None, ".0f")
        for m in shown:
            row[METRICS[m]] = DASH
            if m in s.index:
                row[METRICS[m]] = interval_cell(*s.loc[m, ["mean", "lo", "hi"]], DIGITS.get(m, 2))
        fid = by_seed(runs, variant)
        row["ΔFID vs prev"] = delta_cell(paired_delta(by_seed(runs, order[i - 1]), fid)) if i else DASH
        row["ΔFID vs first"] = delta_cell(paired_delta(by_seed(runs, order[0]), fid)) if i else DASH
        row["FID seed sd"] = stat(s, "fid", "std")
        row["FID sample-noise floor"] = stat(s, "fid_boot_std", "mean")  # the bootstrap sd, seed-averaged
        dirs = runs.loc[runs["variant"] == variant, "run_dir"].unique()
        row["Learned"] = learned_cell(learned.get(d) for d in dirs)
        row["Seeds"] = str(int(s["n"].max()))
        row["Paper FID"] = number(first["paper_fid"], ".2f")
        row["Paper params (M)"] = number(first["paper_params"], ".1f")
        rows.append(row)
    return rows


def reference_row(df: pd.DataFrame, kind: str, shown: list[str], columns: list[str]) -> dict | None:
    """A reference's single values in the metric columns, '–' elsewhere; None if the study has none."""
    ref = reference_of(df, kind)
    if ref.empty:
        return None
    values = ref.set_index("metric")["value"]
    row = dict.fromkeys(columns, DASH)
    row["Variant"] = ref["label"].iloc[0]
    for m in shown:
        if m in values.index:
            row[METRICS[m]] = f"{values[m]:.{DIGITS.get(m, 2)}f}"
    if "fid_boot_std" in values.index:
        row["FID sample-noise floor"] = f"{values['fid_boot_std']:.2f}"
    return row


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Real test images, the variants in study order, uniform noise: one row each."""
    present = set(df["metric"])
    shown = [m for m in METRICS if m in present]
    rows = variant_rows(df, shown)
    columns = list(rows[0])
    top = reference_row(df, REAL, shown, columns)
    bottom = reference_row(df, NOISE, shown, columns)
    return pd.DataFrame([r for r in (top, *rows, bottom) if r is not None], columns=columns)


def terms_cell(terms: dict, labels: dict) -> str:
    """'[b] − 2·[a] + [c]' in the study's labels: the weighted rows of a contrast (weight 1 unwritten)."""
    out = ""
    for i, (variant, c) in enumerate(terms.items()):
        sign = (" − " if c < 0 else " + ") if i else ("−" if c < 0 else "")
        weight = "" if abs(c) == 1 else f"{abs(c):g}·"
        out += f"{sign}{weight}[{labels.get(variant, variant)}]"
    return out


def verdict(d: dict, expect: str | None) -> str:
    """Whether a contrast's interval supports the sign its claim predicts, contradicts it, or cannot tell."""
    if expect is None:
        return DASH
    if not d["significant"]:
        return "cannot tell (interval contains 0)" if d["n"] >= 2 else "cannot tell (one seed)"
    return "supports" if (d["mean"] < 0) == (expect == "negative") else "contradicts"


def contrast_table(df: pd.DataFrame, contrasts: dict) -> pd.DataFrame | None:
    """One row per contrast the study declares: Σ c·FID per seed over the seeds every term ran, its mean
    [t interval], the seeds, the claim and the verdict on it; None when the study declares none."""
    if not contrasts:
        return None
    runs = runs_of(df)
    labels = dict(zip(runs["variant"], runs["label"])) if "label" in runs.columns else {}
    rows = []
    for c in contrasts.values():
        d = contrast({v: by_seed(runs, v) for v in c["terms"]}, c["terms"], LEVEL)
        rows.append({"Contrast": c["label"], "Σ c·FID of": terms_cell(c["terms"], labels),
                     "Estimate": delta_cell(d), "Seeds": str(d["n"]), "Claim": c.get("claim", DASH),
                     "Verdict": verdict(d, c.get("expect"))})
    return pd.DataFrame(rows)


CONTRAST_NOTE = (f"Contrasts: Σ c·FID computed per seed over the seeds every term ran, mean [{LEVEL:.0%} "
                 f"Student-t interval]; {MARK} marks an interval that excludes 0. Verdict: 'supports' when "
                 "the interval excludes 0 on the side the claim predicts, 'contradicts' on the other side.")


def distinct(df: pd.DataFrame, col: str) -> str:
    """The values of a column, joined ('' if the column is absent or empty)."""
    if col not in df.columns:
        return ""
    return ", ".join(sorted({str(v) for v in df[col].dropna()}))


def sampler_text(sampler, steps, scale) -> str:
    """'sampler dpmpp-2m, 12 steps, classifier-free guidance s = 1.5' (parts that are missing left out)."""
    text = f"sampler {sampler}" + (f", {float(steps):g} steps" if pd.notna(steps) else "")
    if pd.notna(scale):  # classifier-free guidance changes every metric: say it next to the sampler
        text += ", no guidance" if float(scale) == 0 else f", classifier-free guidance s = {float(scale):g}"
    return text


def sampler_groups(runs: pd.DataFrame, prefix: str) -> dict[str, list[str]]:
    """{sampler, steps and guidance as text: the labels of the rows sampled so}, in table order; empty
    when the runs carry no `<prefix>.sampler` column."""
    cols = [f"{prefix}.{k}" for k in ("sampler", "steps", "guidance.scale")]
    if cols[0] not in runs.columns or runs[cols[0]].isna().all():
        return {}
    groups: dict[str, list[str]] = {}
    for _, r in runs[runs[cols[0]].notna()].drop_duplicates("variant").iterrows():
        text = sampler_text(*(r.get(c, float("nan")) for c in cols))
        groups.setdefault(text, []).append(str(r.get("label", r["variant"])))
    return groups


def samplers_phrase(groups: dict[str, list[str]]) -> str:
    """One sampler's text alone; several, each followed by the labels of its rows."""
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{text} ({', '.join(labels)})" for text, labels in groups.items())


def protocol_note(df: pd.DataFrame) -> str:
    """Extractor, N and sampler/steps of the runs' metrics, from their protocol columns."""
    runs = runs_of(df)
    parts = [f"{df['scale'].iloc[0]} scale"]
    for col, what in (("protocol.extractor", "feature extractor"), ("protocol.num_samples", "N =")):
        if distinct(runs, col):
            parts.append(f"{what} {distinct(runs, col)}")
    if "protocol.num_samples" not in runs.columns and distinct(runs, "num_samples"):
        parts.append(f"N = {distinct(runs, 'num_samples')}")
    # Rows may differ in sampler (a relay row's stage 2 has its own): then each names its rows.
    samplers, stage1 = sampler_groups(runs, "protocol"), sampler_groups(runs, "protocol.stage1_sampler")
    if samplers:
        parts.append(samplers_phrase(samplers))
    if stage1:
        parts.append("stage 1 of the two-stage rows: " + samplers_phrase(stage1))
    return "Protocol: " + "; ".join(parts) + "."


def notes(df: pd.DataFrame, paper_source: str) -> list[str]:
    """Footnotes: protocol, what the intervals and the marker mean, the not-learned rule, paper source."""
    pct = f"{LEVEL:.0%}"
    noise, noise_n = reference_value(df, NOISE)
    out = [
        protocol_note(df),
        f"Metric cells: mean [{pct} interval] over n seeds (column Seeds): Student t with n − 1 degrees of "
        "freedom; one seed shows its value alone.",
        f"ΔFID vs prev / vs first: FID of the row minus FID of the previous / the first roadmap row, paired "
        f"by seed (seeds both rows ran), mean [{pct} t interval]; {MARK} marks an interval that excludes 0 "
        "(negative: the row is better).",
        "FID seed sd: standard deviation of FID between seeds. FID sample-noise floor: mean over seeds of "
        "the bootstrap standard deviation of FID over a run's own samples; where the two are alike, seeds "
        "differ no more than resampling the same images does.",
    ]
    if math.isnan(noise):
        out.append(f"Learned: needs the uniform-noise row (a run has learned when its FID is at least "
                   f"{LEARNED_FACTOR}× below noise's at the same N); none was scored, so '{DASH}'.")
    else:
        out.append(f"Learned: a run has learned when its FID is at least {LEARNED_FACTOR}× below the FID of "
                   f"uniform noise at the same N (noise FID {noise:.2f} at N = {noise_n:.0f}: threshold "
                   f"{noise / LEARNED_FACTOR:.2f}); 'k/n seeds' counts those that have, '{DASH}' a different "
                   "N.")
    if is_reference(df).any():
        out.append("Reference rows: real test images and uniform noise, scored by the same protocol at the "
                   "same N (one value, no seed): the best and the worst a row can be.")
    if (df["metric"] == "clean_fid_rel_diff").any():
        out.append("clean-fid rel. diff.: |clean-fid's FID − ours| / ours on the same images (clean-fid's "
                   "compute_fid with this feature net, through PNG files), a cross-check of the FID code; "
                   "protocol.clean_fid.clean_fid_agrees in the CSV flags a difference above its tolerance.")
    if "protocol.meaningful" in df.columns and (df["protocol.meaningful"].astype(str) == "False").any():
        out.append("Some features are not meaningful for this data (protocol.meaningful false): "
                   "compare the order of the rows only.")
    if paper_source:
        out.append(f"Paper figures: {paper_source}")
    return out


def markdown_table(t: pd.DataFrame) -> str:
    # Escaped, the marker cannot pair with another cell's into emphasis; "1.50" stays as written.
    escaped = t.apply(lambda col: col.astype(str).str.replace(MARK, "\\" + MARK, regex=False))
    return escaped.to_markdown(index=False, disable_numparse=True)


def to_markdown(t: pd.DataFrame, title: str, footnotes: list[str], contrasts: pd.DataFrame | None = None
                ) -> str:
    out = f"# {title}\n\n{markdown_table(t)}\n\n" + "".join(f"- {n}\n" for n in footnotes)
    if contrasts is not None:
        out += f"\n## Contrasts\n\n{markdown_table(contrasts)}\n\n- {CONTRAST_NOTE}\n"
    return out


def latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("–", "--"), ("−", "-"),
                 ("Δ", r"$\Delta$"), ("×", r"$\times$"), ("≥", r"$\geq$"), ("Σ", r"$\Sigma$"),
                 ("·", r"$\cdot$"), ("§", r"\S{}")):
        s = s.replace(a, b)
    return s


def latex_tabular(t: pd.DataFrame) -> str:
    cells = t.map(lambda v: latex_escape(str(v))).rename(columns=latex_escape)
    align = "l" + "r" * (len(t.columns) - 1)
    return cells.style.hide(axis="index").to_latex(column_format=align, hrules=True)  # booktabs rules


def to_latex(t: pd.DataFrame, title: str, footnotes: list[str], contrasts: pd.DataFrame | None = None
             ) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}), the title and footnotes as comments; the
    contrasts, if any, in a second tabular."""
    out = f"% {title}\n{latex_tabular(t)}" + "".join(f"% {latex_escape(n)}\n" for n in footnotes)
    if contrasts is not None:
        out += f"% Contrasts\n{latex_tabular(contrasts)}% {latex_escape(CONTRAST_NOTE)}\n"
    return out


def to_html(t: pd.DataFrame, title: str, footnotes: list[str], contrasts: pd.DataFrame | None = None
            ) -> str:
    style = ("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} "
             "th,td{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right} "
             "td:first-child,th:first-child{text-align:left} "
             # the contrasts' terms and claims are prose: read from the left
             "table.contrasts td,table.contrasts th{text-align:left}")
    items = "".join(f"<li>{html.escape(n)}</li>" for n in footnotes)
    extra = "" if contrasts is None else (
        f"<h3>Contrasts</h3>{contrasts.to_html(index=False, border=0, classes='contrasts')}"
        f"<ul><li>{html.escape(CONTRAST_NOTE)}</li></ul>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2>"
            f"{t.to_html(index=False, border=0)}<ul>{items}</ul>{extra}</body></html>\n")


def main(snakemake):
    df = main_rows(pd.read_csv(snakemake.input[0]))
    study = snakemake.params.study
    t = table(df)
    foot = notes(df, study["paper_source"])
    title = f"{study['title']} ({study['scale']})"
    contrasts = contrast_table(df, study.get("contrasts", {}))
    for key, render in (("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        with open(snakemake.output[key], "w") as f:
            f.write(render(t, title, foot, contrasts))
    if hasattr(snakemake.output, "summary"):  # optional: the numbers behind the cells, unrounded
        summarize(df).to_csv(snakemake.output.summary, index=False)
    with open(snakemake.log[0], "w") as f:
        print(t.to_string(index=False), file=f)
        if contrasts is not None:
            print(contrasts.to_string(index=False), file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
