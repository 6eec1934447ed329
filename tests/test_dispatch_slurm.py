"""The launcher against a real SLURM cluster: success, requeue on USR2 and on preemption, re-attach,
cancel on interrupt, and external cancels reported as failures. Needs the `slurm_cluster` fixture."""

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime

import pytest
from slurm_cluster import processes_of
from test_dispatch_local import REPO, count, counter, launcher, run, starts

pytestmark = pytest.mark.slurm
TIMEOUT_MIN = "15"  # >= 13: submitit counts a USR2 under ~12.5 min as a time-out, not a preemption


def slurm_launcher(tmp_path, command, *opts):
    return launcher(tmp_path, command, "--timeout-min", TIMEOUT_MIN, "--cpus-per-task", "1", "--mem-gb", "1",
                    *opts, executor="slurm")


def start(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(pred, timeout_s, what, proc=None):
    deadline = time.monotonic() + timeout_s
    while not pred():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"launcher exited {proc.returncode} while waiting for {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def job_id(tmp_path) -> str:
    return json.loads((tmp_path / "job.json").read_text())["job_id"]


def log_times(tmp_path, jid: str, pattern: str) -> list[datetime]:
    """Timestamps of the submitit log lines of job `jid` that match `pattern`."""
    text = (tmp_path / "submitit" / f"{jid}_0_log.out").read_text()
    stamps = re.findall(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - " + pattern, text)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]


def test_slurm_job_succeeds_and_a_rerun_submits_nothing(slurm_cluster, tmp_path):
    cmd = slurm_launcher(tmp_path, counter(tmp_path / "state", 3), "--gpus-per-node", "1")
    res = run(cmd)
    assert res.returncode == 0, res.stderr
    assert count(tmp_path / "state") == 3
    (first,) = starts(tmp_path / "state")
    assert first["SLURM_JOB_ID"] == job_id(tmp_path) and first["CUDA_VISIBLE_DEVICES"] == "0"  # fake GPU
    assert (first["RANK"], first["WORLD_SIZE"], first["LOCAL_RANK"]) == ("0", "1", "0")
    again = run(cmd)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr
    assert slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [job_id(tmp_path)]


def test_slurm_record_of_an_unknown_job_is_not_success(slurm_cluster, tmp_path):
    cmd = slurm_launcher(tmp_path, counter(tmp_path / "state", 2))
    record = {"executor": "slurm", "job_id": "987654", "folder": str(tmp_path / "submitit"), "tasks": 1,
              "command": cmd[cmd.index("--") + 1:]}
    (tmp_path / "job.json").write_text(json.dumps(record))
    res = run(cmd)
    assert res.returncode == 0, res.stderr
    assert "submitting again" in res.stdout and job_id(tmp_path) != "987654"
    assert count(tmp_path / "state") == 2


@pytest.mark.parametrize("how", ["usr2", "preempted"])
def test_slurm_requeue_keeps_job_id_and_resumes(slurm_cluster, tmp_path, how):
    state, steps = tmp_path / "state", 40
    proc = start(slurm_launcher(tmp_path, counter(state, steps, 0.2)))
    wait_until(lambda: count(state) >= 5, 60, "5 steps", proc)
    jid = job_id(tmp_path)
    if how == "usr2":  # what SLURM sends before a time limit, or at preemption
        slurm_cluster.run("scancel", "--signal=USR2", jid, check=True)
    else:  # a whole-node job in the high-priority partition preempts the debug one
        slurm_cluster.run("sbatch", "-p", "high", "--exclusive", "-o", "/dev/null",
                          "-J", f"hi-{tmp_path.name}", "--wrap", "sleep 1", check=True)
    signalled_at = count(state)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert count(state) == steps
    runs = starts(state)
    assert len(runs) == 2 and runs[0]["resumed_from"] == 0
    assert runs[1]["resumed_from"] >= signalled_at > 0  # resumed, not restarted from scratch
    assert {r["SLURM_JOB_ID"] for r in runs} == {jid} and runs[1]["SLURM_RESTART_COUNT"] == "1"
    log = (tmp_path / "submitit" / f"{jid}_0_log.out").read_text()
    assert f"resume from {runs[1]['resumed_from']}" in log and "exiting 75" in log
    assert slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [jid]
    (requeued,) = log_times(tmp_path, jid, "Requeued job")
    (_, restarted) = log_times(tmp_path, jid, "Starting")
    print(f"\n{how}: requeue-to-running {(restarted - requeued).total_seconds():.1f}s")


def test_interrupting_the_launcher_cancels_its_job(slurm_cluster, tmp_path):
    state = tmp_path / "state"
    proc = start(slurm_launcher(tmp_path, counter(state, 10_000, 0.1)))
    wait_until(lambda: count(state) >= 2, 60, "the job to run", proc)
    jid = job_id(tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert jid not in slurm_cluster.queue()  # the launcher waited until SLURM let go of the job
    print(f"\nSIGINT to empty queue: {time.monotonic() - t0:.1f}s")
    assert slurm_cluster.final_state(jid) == "CANCELLED"


def test_rerun_while_running_reattaches_instead_of_submitting(slurm_cluster, tmp_path):
    state = tmp_path / "state"
    cmd = slurm_launcher(tmp_path, counter(state, 30, 0.2))
    first = start(cmd)
    wait_until(lambda: count(state) >= 2, 60, "the job to run", first)
    jid = job_id(tmp_path)
    second = run(cmd, timeout=120)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, f"{err}\n{second.stderr}"
    assert f"job {jid}: re-attaching" in second.stdout
    assert job_id(tmp_path) == jid and slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [jid]
    assert len(starts(state)) == 1 and count(state) == 30


@pytest.mark.parametrize("how", ["scancel", "oom_killed"])
def test_job_ended_from_outside_is_a_failure(slurm_cluster, tmp_path, how):
    state = tmp_path / "state"
    proc = start(slurm_launcher(tmp_path, counter(state, 10_000, 0.1)))
    wait_until(lambda: count(state) >= 2, 60, "the job to run", proc)
    jid = job_id(tmp_path)
    if how == "scancel":
        slurm_cluster.run("scancel", jid, check=True)
    else:  # SIGKILL the job's python processes, as the OOM killer would: no result file is written
        pids = [int(p.split()[0]) for p in processes_of(tmp_path) if "counter_job" in p or "_submit" in p]
        assert len(pids) == 2, processes_of(tmp_path)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, f"{out}\n{err}"
    assert f"job {jid}" in err
    assert f"job {jid} failed: state " + ("CANCELLED" if how == "scancel" else "FAILED") in err
    assert "log.err ----" in err  # the tail of the job's stderr follows
