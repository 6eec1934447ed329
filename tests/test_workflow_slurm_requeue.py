"""The micro study through the `slurm` profile with its evaluation requeued by the cluster mid-sampling:
the job keeps its id, resumes from its saved batches, and the workflow ends with its table."""

import json
import subprocess
import sys
import time

import pytest
from test_dispatch_slurm import wait_until
from test_workflow_e2e import MICRO_STUDY, REPO, micro_workdir
from test_workflow_slurm import LAUNCHER, RESOURCES

pytestmark = pytest.mark.slurm

# 4 batches of 250 (the workflow's `dimr eval --batch` default) at 8 steps: a few seconds each on a core.
STUDY = MICRO_STUDY.replace("num_samples: 50", "num_samples: 1000").replace("steps: 4", "steps: 8")


def eval_batches(workdir) -> list:
    """The evaluation's saved batches (not the curve's, tagged `curve-`, in the same folder)."""
    return [p for p in workdir.glob("runs/networks/*/evals/*/partial/*/*.npy")
            if not p.parent.name.startswith("curve-")]


def test_requeued_evaluation_of_the_workflow_resumes_from_its_saved_batches(slurm_cluster, tmp_path):
    workdir = micro_workdir(tmp_path)
    (workdir / "studies" / "micro.yaml").write_text(STUDY)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--config", "scale=tiny", LAUNCHER, "--cores", "2", "--set-resources", *RESOURCES]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=slurm_cluster.env)
    wait_until(lambda: eval_batches(workdir), 150, "a saved batch of the evaluation", proc)
    (saved,) = {p.parent.parent.parent for p in eval_batches(workdir)}  # the evaluation folder
    record = json.loads((saved / "job-evaluate.json").read_text())
    slurm_cluster.run("scontrol", "requeue", record["job_id"], check=True)  # SIGTERM, then requeued
    out, _ = proc.communicate(timeout=240)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, out[-5000:]
    assert (workdir / "results" / "micro.csv").is_file()

    jid = record["job_id"]
    assert slurm_cluster.sacct_ids(record["name"]) == [jid]  # requeued under its id, never resubmitted
    log = (saved / "submitit" / f"{jid}_0_log.err").read_text()
    assert "exiting 75 to be requeued" in log and "resuming with" in log, log[-3000:]
    metrics = json.loads((saved / "metrics.json").read_text())
    assert metrics["protocol"]["resumed_images"] > 0 and metrics["protocol"]["num_samples"] == 1000
    print(f"\nmicro study through --profile slurm, its evaluation requeued: {took:.0f} s, "
          f"{metrics['protocol']['resumed_images']} of 1000 images read back")
    assert not eval_batches(workdir)  # removed once metrics.json was written
