"""A micro study end to end through the local executor: study file -> runs -> table, figures, HTML report."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]

# One variant, one seed, 0.5 kimg of training, 50 samples: every stage runs, in about a minute on 2 cores.
MICRO_STUDY = """
title: "Micro study"
scales:
  tiny:
    seeds: [0]
    base:
      recipe: tiny-fmnist
      preset: tiny-dimr-2r
      diffusion: {loss: {type: dimr-multiscale}}
      train: {total_kimg: 0.5, batch_size: 32, log_kimg: 0.1, checkpoint_kimg: 0.25}
      sample: {num_samples: 50, grid: 16, snapshot_samples: 20, sampler: {steps: 4}}
      evaluate: {num_pr: 40}
variants:
  dimr:
    label: "DiMR-2R"
"""


def micro_workdir(root: Path) -> Path:
    """A working directory whose config/config.yaml runs the micro study (and a 1-epoch feature net)."""
    (root / "studies").mkdir(parents=True)
    (root / "studies" / "micro.yaml").write_text(MICRO_STUDY)
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(json.dumps({
        "studies": ["micro"], "studies_dir": str(root / "studies"),
        "fidnet": {"epochs": 1, "num_train": 2000}}))
    return root


def check_micro_results(workdir: Path):
    """The table, its renderings and the figures of a finished micro study."""
    df = pd.read_csv(workdir / "results" / "micro.csv")
    refs, runs = df[df["reference"].notna()], df[df["reference"].isna()]
    assert set(runs["variant"]) == {"dimr"} and set(runs["seed"]) == {0}
    fid = runs.loc[runs["metric"] == "fid", "value"]
    assert len(fid) == 1 and 0 < fid.iloc[0] < 1e4
    # The reference rows are scored by the same protocol at the same N: real images beat noise.
    ref_fid = refs[refs["metric"] == "fid"].set_index("reference")["value"]
    assert ref_fid["real-test"] * 10 < ref_fid["uniform-noise"]
    assert {"accuracy", "fid_boot_std"} <= set(runs["metric"])
    curves = pd.read_csv(workdir / "results" / "micro_curves.csv")
    assert len(curves) == 1 and curves["num_samples"].iloc[0] == 20  # no snapshot in 0.5 kimg: final only
    assert (df["protocol.extractor"] == "fmnist-net").all() and (df["protocol.num_samples"] == 50).all()
    assert runs["params"].iloc[0] > 0 and runs["gmacs"].iloc[0] > 0
    assert "| DiMR-2R " in (workdir / "results" / "micro.md").read_text()
    assert r"\toprule" in (workdir / "results" / "micro.tex").read_text()
    for fig in ("fid_bars", "fid_vs_gmacs", "fid_curve", "samples"):
        assert (workdir / "reports" / "micro" / f"{fig}.png").stat().st_size > 10_000, fig


@pytest.mark.slow
def test_micro_study_runs_end_to_end_locally(tmp_path):
    workdir = micro_workdir(tmp_path)
    t0 = time.perf_counter()
    run = subprocess.run([*SNAKEMAKE, "--cores", "2", "--directory", str(workdir)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"\nmicro study end to end (local executor): {time.perf_counter() - t0:.0f} s")
    check_micro_results(workdir)
    run = json.loads((workdir / "runs" / "micro" / "tiny" / "dimr" / "seed0" / "run.json").read_text())
    net_dir = workdir / run["network_dir"]
    record = json.loads((net_dir / "job-train.json").read_text())
    assert record["executor"] == "local" and record["command"][-4:-2] == ["train", run["network_dir"]]
    assert list((net_dir / "checkpoints").glob("training-state-*.pt"))  # kept, though not a declared output

    again = subprocess.run([*SNAKEMAKE, "-n", "--directory", str(workdir)], capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr

    report = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--report", "reports/report.html"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (workdir / "reports" / "report.html").read_text()
    for item in ("fid_bars.png", "samples.png", "table.html", "micro.csv"):
        assert item in html, item


def file_identity(path: Path) -> tuple[int, str]:
    import hashlib

    return path.stat().st_ino, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sampling_edits_rerun_only_evaluation_and_training_edits_stop_before_any_job(tmp_path):
    workdir = micro_workdir(tmp_path)
    done = subprocess.run([*SNAKEMAKE, "--cores", "2", "--directory", str(workdir)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    run = json.loads((workdir / "runs/micro/tiny/dimr/seed0/run.json").read_text())
    network = workdir / run["network_dir"] / "network-final.pt"
    before = file_identity(network)
    study = workdir / "studies" / "micro.yaml"

    # A sampling key and an evaluation key: a new evaluation of the same network, no train job.
    study.write_text(MICRO_STUDY.replace("num_samples: 50", "num_samples: 60").replace(
        "{num_pr: 40}", "{num_pr: 30}"))
    plan = subprocess.run([*SNAKEMAKE, "-n", "--directory", str(workdir)], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "rule train:" not in plan.stdout and "rule evaluate:" in plan.stdout
    rerun = subprocess.run([*SNAKEMAKE, "--cores", "2", "--directory", str(workdir)], capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert file_identity(network) == before
    df = pd.read_csv(workdir / "results" / "micro.csv")
    assert (df.loc[df["reference"].isna(), "protocol.num_samples"] == 60).all()
    assert len(list((network.parent / "evals").iterdir())) == 2  # the first evaluation is kept beside it

    # A training key of the finished run: the planner stops, naming the key, before any job.
    study.write_text(MICRO_STUDY.replace("total_kimg: 0.5", "total_kimg: 0.6"))
    stop = subprocess.run([*SNAKEMAKE, "--cores", "2", "--directory", str(workdir)], capture_output=True,
                          text=True, timeout=300)
    assert stop.returncode != 0
    assert "train.total_kimg: 0.5 -> 0.6" in stop.stderr and "Nothing was deleted" in stop.stderr
    assert "rule train" not in stop.stdout
    assert file_identity(network) == before
