"""The micro study through the repository's `slurm` profile to its table, on the test SLURM cluster."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_workflow_e2e import REPO, check_micro_results, micro_workdir

pytestmark = pytest.mark.slurm

# The fake node has 1 GPU and nproc CPUs: replace the paper-sized requests of config/slurm.yaml, key by
# key. 15 min: submitit treats USR2 under ~12.5 min as a time-out.
JOB = "gpus=1,nodes=1,cpus_per_task=1,mem_mb=2000,runtime=15"
RULES = ("fidnet", "reference", "train", "curve", "evaluate", "evaluate_baseline")
RESOURCES = [f"{rule}:{kv}" for rule in RULES for kv in JOB.split(",")]
LAUNCHER = "launcher={poll_s: 1}"  # the launchers ask squeue every second (15 s on a real cluster)


def test_micro_study_through_the_slurm_profile(slurm_cluster, tmp_path):
    workdir = micro_workdir(tmp_path)
    # Typed in the repository root, `--profile slurm` finds ./slurm/config.yaml; its configfile
    # (config/slurm.yaml) sets dispatch: slurm and scale: paper; --config keeps dispatch, sets the scale.
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--config", "scale=tiny", LAUNCHER, "--cores", "2", "--set-resources", *RESOURCES]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170, env=slurm_cluster.env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    print(f"\nmicro study through --profile slurm: {time.perf_counter() - t0:.0f} s")
    check_micro_results(workdir)

    run = json.loads((workdir / "runs" / "micro" / "tiny" / "dimr" / "seed0" / "run.json").read_text())
    main = run["evals"][0]["dir"]
    stage_dirs = {"train": run["network_dir"], "curve": main, "evaluate": main}
    ids = {}
    for stage, folder in stage_dirs.items():
        record = json.loads((workdir / folder / f"job-{stage}.json").read_text())
        assert record["executor"] == "slurm", stage
        ids[stage] = record["job_id"]
    # Each stage ran as its own SLURM job, known to accounting, and nothing is left in the queue.
    assert len(set(ids.values())) == 3
    for stage, jid in ids.items():
        assert slurm_cluster.final_state(jid) == "COMPLETED", (stage, jid)
    assert slurm_cluster.queue() == []


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_to_snakemakes_pid_cancels_its_jobs(slurm_cluster, tmp_path, signame):
    # `kill -INT PID` / `kill -TERM PID` reach Snakemake alone (not its process group, as Ctrl-C does).
    workdir = micro_workdir(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--config", "scale=tiny", LAUNCHER, "--cores", "2", "--set-resources", *RESOURCES]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=slurm_cluster.env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "RUNNING" not in slurm_cluster.run("squeue", "-h", "-o", "%T").stdout:
            assert proc.poll() is None and time.monotonic() < deadline, "no job started"
            time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(getattr(signal, signame))
        emptied = slurm_cluster.wait_queue_empty(timeout_s=30)
        took = time.monotonic() - t0
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert emptied, f"queue not empty 30 s after {signame}: {slurm_cluster.queue()}\n{out[-3000:]}"
    # every rule log, at any depth (logs/prepare/fidnet.log when the feature net's job ran first)
    logs = "".join(p.read_text() for p in workdir.rglob("*.log") if "logs" in p.relative_to(workdir).parts)
    assert proc.returncode != 0 and "cancelling job" in out + logs, out[-3000:]
    print(f"\n{signame} to Snakemake's PID: queue empty after {took:.1f} s")


def test_hard_killed_workflow_rerun_submits_nothing_twice(slurm_cluster, tmp_path):
    # SIGKILL to Snakemake's process group: nobody cancels; the jobs finish unattended. The rerun
    # (rerun-incomplete deletes those jobs' outputs first) re-attaches or puts the outputs back.
    workdir = micro_workdir(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir),
           "--config", "scale=tiny", LAUNCHER, "--cores", "2", "--set-resources", *RESOURCES]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=slurm_cluster.env, start_new_session=True)
    deadline = time.monotonic() + 120
    while "dimr-train" not in slurm_cluster.run("squeue", "-h", "-t", "R", "-o", "%j").stdout:
        assert proc.poll() is None and time.monotonic() < deadline, "the train job never ran"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (train_record,) = workdir.glob("runs/networks/*/job-train.json")
    train_id = json.loads(train_record.read_text())["job_id"]
    assert slurm_cluster.wait_queue_empty(timeout_s=120), "the unattended jobs did not finish"
    assert slurm_cluster.final_state(train_id) == "COMPLETED"

    unlock = subprocess.run([*cmd, "--unlock"], cwd=REPO, capture_output=True, text=True,
                            env=slurm_cluster.env)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=slurm_cluster.env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-4000:]
    check_micro_results(workdir)
    assert json.loads(train_record.read_text())["job_id"] == train_id
    assert "put back" in (train_record.parent / "logs" / "train.log").read_text()
    # Every stage: one job in accounting, however it ended (other tests of the session share job names).
    out = slurm_cluster.run("sacct", "-n", "-X", "-P", "-D", "-o", "JobName,JobID,WorkDir", check=True).stdout
    ids = {}
    for name, jid, where in (ln.split("|") for ln in out.splitlines()):
        if where == str(workdir):
            ids.setdefault(name, set()).add(jid)
    names = {json.loads(r.read_text())["name"] for r in workdir.rglob("job-*.json")}
    assert names == set(ids) and all(len(v) == 1 for v in ids.values()), ids
