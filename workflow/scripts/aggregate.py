"""Collect a study's runs into one long-format table: one row per run × metric, every protocol key carried.

Reads, per run directory, `metrics.json` (dimr evaluate) and `config.json` (the run config), and the
study's `model_info.json` (parameters and GMACs per variant). Reference rows (real test images, uniform
noise; `dimr baseline` scored by `dimr evaluate` with the runs' protocol) join the same table with their
`reference` column set to their kind: empty seed, no params, order -1 (real, above every variant) or
999 (noise, below). Training curves (each run's `curve.json`) go to a second long table, one row per
run × snapshot. pandas only; never torch.
"""

import json
from pathlib import Path

import pandas as pd

# Columns in front; the protocol columns (protocol.<key>) follow in sorted order.
COLUMNS = ["study", "scale", "variant", "label", "order", "seed", "reference", "eval", "metric", "value",
           "params", "gmacs", "paper_fid", "paper_params", "preset", "recipe", "train_kimg", "batch_size",
           "num_samples", "nfe", "network", "run_dir"]  # then sweep.*, learned, meaningful, protocol.*
# `eval`: main (the run's own sample section: the tables), sweep (a point of the study's sampling sweep,
# reported), select (the same point on the selection sample seeds: only for choosing, never reported).
# `run_dir` is the evaluation's folder (runs/networks/<network>/evals/<id>).
# The curve table: one row per run × training snapshot, the curve's protocol columns after these.
CURVE_COLUMNS = ["study", "scale", "variant", "label", "order", "seed", "kimg", "fid", "accuracy",
                 "num_samples", "run_dir"]
# Row order of the reference rows: real data above the roadmap's variants, noise below them.
REFERENCE_ORDER = {"real-test": -1, "uniform-noise": 999}


def flatten(d: dict) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become JSON strings so that every cell is a scalar."""
    flat = pd.json_normalize(d).to_dict(orient="records")[0]  # one dict in, one record out
    return {k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in flat.items()}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"aggregate: {path} not found; the run has not finished that stage") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"aggregate: {path} is not JSON ({e}); rerun the stage that wrote it") from None


def run_rows(run: dict, variant: dict, study: dict, info: dict) -> list[dict]:
    """Rows of one run: one per metric value of each of its evaluations; `info`: the network's size."""
    cfg = read_json(Path(run["network_dir"]) / "config.json")
    common = {
        "study": study["study"], "scale": study["scale"], "variant": run["variant"],
        "label": variant["label"], "order": variant["order"], "seed": run["seed"], "reference": "",
        "params": info.get("params"), "gmacs": info.get("gmacs"),
        "paper_fid": variant.get("paper_fid"), "paper_params": variant.get("paper_params"),
        "preset": cfg["preset"], "recipe": cfg["recipe"], "train_kimg": cfg["train"]["total_kimg"],
        "batch_size": cfg["train"]["batch_size"], "network": run["network"],
    }
    rows = []
    for e in run["evals"]:
        result = read_json(Path(e["dir"]) / "metrics.json")
        point = {f"sweep.{k}": v for k, v in e["point"].items() if k != "sample.seed_start"}
        protocol = result.get("protocol", {})
        rows += metric_rows(result, {**common, "eval": e["role"], "run_dir": e["dir"], **point,
                                     "num_samples": protocol.get("num_samples"), "nfe": protocol.get("nfe")})
    return rows


def metric_rows(result: dict, common: dict) -> list[dict]:
    """One row per numeric metric of a metrics.json, each with `common` and the protocol columns."""
    protocol = protocol_columns(result)
    rows = []
    for metric, value in flatten(result["metrics"]).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # only numbers are metrics (a metric not computed is null)
        rows.append({**common, "metric": metric, "value": value, **protocol})
    return rows


def protocol_columns(result: dict) -> dict:
    return {f"protocol.{k}": v for k, v in flatten(result.get("protocol", {})).items()}


def reference_rows(ref: dict, study: dict) -> list[dict]:
    """Rows of one reference ({kind, label, run_dir}): its metrics, no seed, network or training."""
    kind = ref["kind"]
    if kind not in REFERENCE_ORDER:
        raise SystemExit(f"aggregate: reference kind {kind!r}; valid: {sorted(REFERENCE_ORDER)}")
    run_dir = Path(ref["run_dir"])
    result = read_json(run_dir / "metrics.json")
    common = {"study": study["study"], "scale": study["scale"], "variant": kind, "label": ref["label"],
              "order": REFERENCE_ORDER[kind], "seed": None, "reference": kind, "eval": "main",
              "num_samples": result.get("protocol", {}).get("num_samples"), "run_dir": str(run_dir)}
    return metric_rows(result, common)


def aggregate(runs: list[dict], study: dict, model_info: dict, references: list[dict] = ()) -> pd.DataFrame:
    """The long table of `runs` ([{variant, seed, run_dir}]) of `study` (title, scale, variants) and of
    its `references` ([{kind, label, run_dir}]); `model_info` maps each variant to its {params, gmacs}."""
    variants = {v["variant"]: v for v in study["variants"]}
    rows = [row for run in runs
            for row in run_rows(run, variants[run["variant"]], study, model_info.get(run["variant"], {}))]
    if not rows:
        raise SystemExit(f"aggregate: no metrics found for study {study['study']}")
    rows += [row for ref in references for row in reference_rows(ref, study)]
    return with_learned(ordered(pd.DataFrame(rows), COLUMNS, ["order", "seed", "metric"]))


def with_learned(df: pd.DataFrame) -> pd.DataFrame:
    """Columns `learned` (the table's not-learned rule against the noise row; empty where untestable)
    and `meaningful`: the extractor suits the data AND the run learned something."""
    from tables import learned_runs  # the rule is the table's; one definition

    verdict = learned_runs(df)
    df["learned"] = df["run_dir"].map(lambda d: verdict.get(d)).astype(object)
    extractor_ok = df.get("protocol.meaningful", pd.Series(True, index=df.index)).astype(str) != "False"
    df["meaningful"] = extractor_ok & df["learned"].map(lambda v: v is not False)
    return df


def ordered(df: pd.DataFrame, columns: list[str], keys: list[str]) -> pd.DataFrame:
    """`columns`, then the protocol columns sorted; rows sorted by `keys` (stable: ties keep input order)."""
    for c in columns:
        if c not in df.columns:
            df[c] = None  # e.g. no reference row had a params column
    df["seed"] = df["seed"].astype("Int64")  # seeds stay integers next to the references' empty seed
    sweep = [c for c in df.columns if c.startswith("sweep.")]  # in the study's order
    after = [c for c in ("learned", "meaningful") if c in df.columns and c not in columns]
    protocol = sorted(c for c in df.columns if c.startswith("protocol."))
    return df[columns + sweep + after + protocol].sort_values(keys, kind="stable").reset_index(drop=True)


def curve_rows(run: dict, variant: dict, study: dict, path) -> list[dict]:
    """Rows of one run's curve.json: one per training snapshot (kimg, FID, accuracy at its N)."""
    curve = read_json(Path(path))
    common = {"study": study["study"], "scale": study["scale"], "variant": run["variant"],
              "label": variant["label"], "order": variant["order"], "seed": run["seed"],
              "run_dir": run["evals"][0]["dir"], **protocol_columns(curve)}
    return [{**common, **{k: p.get(k) for k in ("kimg", "fid", "accuracy", "num_samples")}}
            for p in curve["points"]]


def curves(runs: list[dict], paths: list[str], study: dict) -> pd.DataFrame:
    """The curve table of `runs`, whose curve.json files are `paths` (one per run's main evaluation)."""
    if len(paths) != len(runs):
        raise SystemExit(f"aggregate: {len(paths)} curve files for {len(runs)} runs; input `curves` must "
                         "list one per run, in the order of params `runs`")
    variants = {v["variant"]: v for v in study["variants"]}
    rows = [row for run, path in zip(runs, paths)
            for row in curve_rows(run, variants[run["variant"]], study, path)]
    return ordered(pd.DataFrame(rows), CURVE_COLUMNS, ["order", "seed", "kimg"])


def main(snakemake):
    params = snakemake.params
    references = getattr(params, "references", None) or []
    df = aggregate(params.runs, params.study, read_json(Path(snakemake.input.info)), references)
    df.to_csv(snakemake.output[0], index=False)
    lines = [f"{len(df)} rows from {df['run_dir'].nunique()} runs and references -> {snakemake.output[0]}"]
    if hasattr(snakemake.output, "curves"):  # optional second output: the training curves
        c = curves(params.runs, list(snakemake.input.curves), params.study)
        c.to_csv(snakemake.output.curves, index=False)
        lines.append(f"{len(c)} curve points -> {snakemake.output.curves}")
    with open(snakemake.log[0], "w") as f:
        print("\n".join(lines), file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
