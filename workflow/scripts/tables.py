"""Render a study's long table as the paper-style table: mean ± std over seeds per variant, in Markdown,
LaTeX and HTML, with parameters, GMACs and the paper's figures beside ours. pandas only; never torch.
"""

import html
import math

import pandas as pd

# Metrics shown, in column order, with the direction that is better; others stay in the CSV only.
METRICS = {"fid": "FID ↓", "clean_fid": "clean-FID ↓", "is_mean": "IS ↑", "precision": "Precision ↑",
           "recall": "Recall ↑"}


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant and metric: mean, std (ddof 1; NaN for one seed), number of seeds, params, GMACs."""
    keys = ["order", "variant", "label", "metric"]
    stats = df.groupby(keys, sort=True)["value"].agg(mean="mean", std="std", n="count").reset_index()
    per_variant = df.groupby("variant")[["params", "gmacs", "paper_fid", "paper_params"]].first()
    return stats.join(per_variant, on="variant")


def mean_std(mean: float, std: float, digits: int, pm: str = " ± ") -> str:
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{pm}{std:.{digits}f}"


def number(x, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table(summary: pd.DataFrame, pm: str = " ± ") -> pd.DataFrame:
    """One row per variant, in study order: params, GMACs, metrics, seeds and the paper's figures."""
    shown = [m for m in METRICS if m in set(summary["metric"])]
    rows = []
    for (_, label), g in summary.groupby(["order", "label"], sort=True):
        by_metric = g.set_index("metric")
        first = g.iloc[0]
        row = {"Variant": label, "Params (M)": number(first["params"] / 1e6, ".2f"),
               "GMACs": number(first["gmacs"], ".3g")}
        for m in shown:
            digits = 3 if m in ("precision", "recall") else 2
            row[METRICS[m]] = "–"
            if m in by_metric.index:
                row[METRICS[m]] = mean_std(by_metric.at[m, "mean"], by_metric.at[m, "std"], digits, pm)
        row["Seeds"] = str(int(g["n"].max()))
        row["Paper FID"] = number(first["paper_fid"], ".2f")
        row["Paper params (M)"] = number(first["paper_params"], ".1f")
        rows.append(row)
    return pd.DataFrame(rows)


def notes(df: pd.DataFrame, paper_source: str) -> list[str]:
    """Footnotes: the metric protocol of our numbers and where the paper's come from."""
    out = [f"Mean ± standard deviation over seeds; {df['scale'].iloc[0]} scale."]
    for col, what in (("protocol.extractor", "feature extractor"), ("num_samples", "samples per run")):
        if col in df.columns:
            values = sorted({str(v) for v in df[col].dropna()})
            out.append(f"{what}: {', '.join(values)}")
    if paper_source:
        out.append(f"Paper figures: {paper_source}")
    return out


def to_markdown(t: pd.DataFrame, title: str, footnotes: list[str]) -> str:
    body = t.to_markdown(index=False, disable_numparse=True)  # keep "1.50" as written
    return f"# {title}\n\n{body}\n\n" + "".join(f"- {n}\n" for n in footnotes)


def latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("–", "--")):
        s = s.replace(a, b)
    return s


def to_latex(t: pd.DataFrame, title: str, footnotes: list[str]) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    head = " & ".join(latex_escape(c) for c in t.columns) + r" \\"
    body = [" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in t.itertuples(index=False)]
    lines = [f"% {title}", r"\begin{tabular}{l" + "r" * (len(t.columns) - 1) + "}", r"\toprule", head,
             r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {latex_escape(n)}" for n in footnotes]
    return "\n".join(lines) + "\n"


def to_html(t: pd.DataFrame, title: str, footnotes: list[str]) -> str:
    style = ("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse} "
             "th,td{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right} "
             "td:first-child,th:first-child{text-align:left}")
    items = "".join(f"<li>{html.escape(n)}</li>" for n in footnotes)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h2>{html.escape(title)}</h2>"
            f"{t.to_html(index=False, border=0)}<ul>{items}</ul></body></html>\n")


def main(snakemake):
    df = pd.read_csv(snakemake.input[0])
    study = snakemake.params.study
    t = table(summarize(df))
    foot = notes(df, study["paper_source"])
    title = f"{study['title']} ({study['scale']})"
    for key, render in (("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        with open(snakemake.output[key], "w") as f:
            f.write(render(t, title, foot))
    with open(snakemake.log[0], "w") as f:
        print(t.to_string(index=False), file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
