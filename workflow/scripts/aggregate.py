"""Collect a study's runs into one long-format table: one row per run × metric, every protocol key carried.

Reads, per run directory, `metrics.json` (dimr evaluate) and `config.json` (the run config), and the
study's `model_info.json` (parameters and GMACs per variant). pandas only; never torch.
"""

import json
from pathlib import Path

import pandas as pd

# Columns in front; the protocol columns (protocol.<key>) follow in sorted order.
COLUMNS = ["study", "scale", "variant", "label", "order", "seed", "metric", "value", "params", "gmacs",
           "paper_fid", "paper_params", "preset", "recipe", "train_kimg", "batch_size", "num_samples",
           "run_dir"]


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become JSON strings so that every cell is a scalar."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"aggregate: {path} not found; the run has not finished that stage") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"aggregate: {path} is not JSON ({e}); rerun the stage that wrote it") from None


def run_rows(run: dict, variant: dict, study: dict, info: dict) -> list[dict]:
    """Rows of one run: one per metric value in its metrics.json; `info` has the network's params, GMACs."""
    run_dir = Path(run["run_dir"])
    result = read_json(run_dir / "metrics.json")
    cfg = read_json(run_dir / "config.json")
    common = {
        "study": study["study"], "scale": study["scale"], "variant": run["variant"],
        "label": variant["label"], "order": variant["order"], "seed": run["seed"],
        "params": info.get("params"), "gmacs": info.get("gmacs"),
        "paper_fid": variant.get("paper_fid"), "paper_params": variant.get("paper_params"),
        "preset": cfg["preset"], "recipe": cfg["recipe"], "train_kimg": cfg["train"]["total_kimg"],
        "batch_size": cfg["train"]["batch_size"], "num_samples": cfg["sample"]["num_samples"],
        "run_dir": str(run_dir),
    }
    protocol = {f"protocol.{k}": v for k, v in flatten(result.get("protocol", {})).items()}
    rows = []
    for metric, value in flatten(result["metrics"]).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # only numbers are metrics (a metric not computed is null)
        rows.append({**common, "metric": metric, "value": value, **protocol})
    return rows


def aggregate(runs: list[dict], study: dict, model_info: dict) -> pd.DataFrame:
    """The long table of `runs` ([{variant, seed, run_dir}]) of `study` (title, scale, variants);
    `model_info` maps each variant to its {params, gmacs}."""
    variants = {v["variant"]: v for v in study["variants"]}
    rows = [row for run in runs
            for row in run_rows(run, variants[run["variant"]], study, model_info.get(run["variant"], {}))]
    if not rows:
        raise SystemExit(f"aggregate: no metrics found for study {study['study']}")
    df = pd.DataFrame(rows)
    protocol = sorted(c for c in df.columns if c.startswith("protocol."))
    df = df[COLUMNS + protocol].sort_values(["order", "seed", "metric"], kind="stable")
    return df.reset_index(drop=True)


def main(snakemake):
    df = aggregate(snakemake.params.runs, snakemake.params.study, read_json(Path(snakemake.input.info)))
    df.to_csv(snakemake.output[0], index=False)
    with open(snakemake.log[0], "w") as f:
        print(f"{len(df)} rows from {df['run_dir'].nunique()} runs -> {snakemake.output[0]}", file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
