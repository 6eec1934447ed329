"""What a cluster does behind the launcher's back: `scontrol requeue`, a hard-killed launcher whose job
finishes unattended, time limits past submitit's default cap, a request that can never run. Each
ends with one job id per stage in accounting and the command's work done once."""

import json
import signal
import subprocess
import sys
import time

import pytest
from test_dispatch_local import REPO, count, counter, run, starts
from test_dispatch_slurm import job_id, slurm_launcher, start, wait_until

pytestmark = pytest.mark.slurm


def sacct_state(cluster, jid: str) -> str:
    out = cluster.run("sacct", "-n", "-X", "-P", "-j", jid, "-o", "State").stdout.split()
    return out[0] if out else ""


def test_scontrol_requeue_is_waited_through_and_a_rerun_meanwhile_reattaches(slurm_cluster, tmp_path):
    # scontrol requeue sends SIGTERM (no USR2): the command saves and exits 75, SLURM restarts the job.
    state, steps = tmp_path / "state", 30
    cmd = slurm_launcher(tmp_path, counter(state, steps, 0.2))
    first = start(cmd)
    wait_until(lambda: count(state) >= 3, 60, "3 steps", first)
    jid = job_id(tmp_path)
    slurm_cluster.run("scontrol", "requeue", jid, check=True)
    wait_until(lambda: slurm_cluster.run("squeue", "-h", "-j", jid, "-o", "%T").stdout.strip() != "RUNNING",
               30, "the requeue", first)
    requeued_at = count(state)
    second = run(cmd, timeout=120)  # a rerun while the job waits to run again
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, f"{out}\n{err}"
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"job {jid}: re-attaching" in second.stdout
    assert slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [jid]
    runs = starts(state)
    assert len(runs) == 2 and runs[1]["resumed_from"] >= requeued_at > 0  # continued, not restarted
    assert count(state) == steps


def test_job_finished_after_a_hard_kill_is_not_submitted_again(slurm_cluster, tmp_path):
    state = tmp_path / "state"
    output = state / "counter.json"
    cmd = slurm_launcher(tmp_path, counter(state, 15, 0.2), "--expect", str(output))
    first = start(cmd)
    wait_until(lambda: count(state) >= 2, 60, "the job to run", first)
    first.send_signal(signal.SIGKILL)  # no chance to cancel: the job runs on unattended
    first.communicate(timeout=10)
    jid = job_id(tmp_path)
    wait_until(lambda: sacct_state(slurm_cluster, jid) == "COMPLETED", 60, "the job to finish unattended")
    output.unlink()  # what Snakemake's rerun-incomplete does to the outputs of an interrupted job
    again = run(cmd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"job {jid} already finished; put back" in again.stdout
    assert json.loads(output.read_text())["count"] == 15
    assert slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [jid] and len(starts(state)) == 1


def test_preempted_command_without_a_handler_is_requeued_and_run_again(slurm_cluster, tmp_path):
    # A command without a handler (`dimr evaluate`): USR2 kills it; the job is requeued, not FAILED.
    plain = [sys.executable, "-c", "import pathlib, sys, time; d = pathlib.Path(sys.argv[1]); "
             "d.mkdir(exist_ok=True); open(d / 'starts', 'a').write('x'); time.sleep(8); "
             "(d / 'done').write_text('ok')", str(tmp_path / "out")]
    proc = start(slurm_launcher(tmp_path, plain, "--expect", str(tmp_path / "out" / "done")))
    wait_until(lambda: (tmp_path / "out" / "starts").exists(), 60, "the job to run", proc)
    jid = job_id(tmp_path)
    slurm_cluster.run("scancel", "--signal=USR2", jid, check=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert (tmp_path / "out" / "starts").read_text() == "xx" and (tmp_path / "out" / "done").exists()
    assert slurm_cluster.sacct_ids(f"t-{tmp_path.name}") == [jid]


def test_preempted_eval_job_resumes_from_its_saved_batches(slurm_cluster, tiny_eval, tmp_path):
    # `dimr eval` saves each finished sample batch; pre-empted by a high-priority job (USR2) it exits 75,
    # the job is requeued under the same id, and the rerun samples only the batches not yet saved.
    root, spec = tiny_eval  # job name t-eval-job: sacct names are shared by the session's cluster
    spec = {**spec, "sample": {**spec["sample"], "num_samples": 320, "sampler": {"steps": 40}}}
    env = {**slurm_cluster.env, "OMP_NUM_THREADS": "1"}
    dimr = [sys.executable, "-m", "dimr.cli", "eval", str(root / "net"), "--spec", json.dumps(spec),
            "--batch", "8", "--out"]
    local = subprocess.run([*dimr, str(tmp_path / "local")], env=env, cwd=REPO, capture_output=True,
                           text=True)
    assert local.returncode == 0, local.stderr
    out = tmp_path / "eval-job" / "eval"
    proc = subprocess.Popen(slurm_launcher(tmp_path / "eval-job", [*dimr, str(out)], "--expect",
                                           str(out / "metrics.json")),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(list(out.glob("partial/*/*.npy"))) >= 2, 120, "two saved batches", proc)
    jid = job_id(tmp_path / "eval-job")
    slurm_cluster.run("sbatch", "-p", "high", "--exclusive", "-o", "/dev/null", "-J", f"hi-{tmp_path.name}",
                      "--wrap", "sleep 1", check=True)
    outs, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{outs}\n{err}"
    assert slurm_cluster.sacct_ids("t-eval-job") == [jid]
    job_log = (tmp_path / "eval-job" / "submitit" / f"{jid}_0_log.out").read_text()
    job_err = (tmp_path / "eval-job" / "submitit" / f"{jid}_0_log.err").read_text()
    assert "exiting 75 to be requeued" in job_err and "resuming with" in job_err, job_log[-2000:] + job_err
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "local"))
    assert got["protocol"]["resumed_images"] >= 16 and got["metrics"] == want["metrics"]
    assert got["protocol"]["samples_sha256"] == want["protocol"]["samples_sha256"]


def test_time_limits_requeue_without_a_cap(slurm_cluster, tmp_path):
    # A 1-minute limit with USR2 50 s before it: every ~10-30 s a time-out, past submitit's default of 3.
    state, requeues = tmp_path / "state", 5
    t0 = time.monotonic()
    proc = start(slurm_launcher(tmp_path, counter(state, 10_000, 0.2), "--timeout-min", "1",
                                "--signal-delay-s", "50"))
    wait_until(lambda: len(starts(state)) > requeues if (state / "starts.jsonl").exists() else False,
               600, f"{requeues} requeues", proc)
    jid = job_id(tmp_path)
    slurm_cluster.run("scancel", jid, check=True)
    proc.communicate(timeout=60)
    runs = starts(state)
    assert {r["SLURM_JOB_ID"] for r in runs} == {jid}
    assert [r["resumed_from"] > 0 for r in runs] == [False] + [True] * (len(runs) - 1)
    log = (tmp_path / "submitit" / f"{jid}_0_log.out").read_text()
    assert log.count("Requeued job") >= requeues and "timed-out too many times" not in log
    print(f"\n{len(runs) - 1} time-limit requeues in {time.monotonic() - t0:.0f} s")


def test_request_that_can_never_run_fails_fast_with_slurm_reason(slurm_cluster, tmp_path):
    # A partition whose MaxTime is under the job's limit: SLURM accepts the job and leaves it pending.
    part = f"short{tmp_path.name[-6:].replace('_', '')}"
    host = slurm_cluster.run("sinfo", "-h", "-o", "%n").stdout.split()[0]
    slurm_cluster.run("scontrol", "create", f"PartitionName={part}", f"Nodes={host}", "MaxTime=1", check=True)
    try:
        t0 = time.monotonic()
        res = run(slurm_launcher(tmp_path, counter(tmp_path / "state", 2), "--partition", part,
                                 "--pending-report-s", "30"), timeout=60)
        took = time.monotonic() - t0
    finally:
        slurm_cluster.run("scontrol", "delete", f"PartitionName={part}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "PartitionTimeLimit" in res.stderr and "MaxTime" in res.stderr, res.stderr
    assert took < 30 and job_id(tmp_path) not in slurm_cluster.queue()
    print(f"\nimpossible request failed in {took:.1f} s")


def log_lines(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def interrupt_after_progress(cluster, tmp_path, log, how: str, proc, resumed=0):
    """Once the job has resumed `resumed` times and its training log has grown since, pre-empt it (a
    whole-node high job) or scontrol-requeue it. Waiting for the resume keeps two interruptions from
    landing in one checkpoint-and-requeue (a loaded machine can stretch that to many seconds)."""
    def resumes():
        jid = job_id(tmp_path / "slurm")
        out = tmp_path / "slurm" / "submitit" / f"{jid}_0_log.out"
        return out.read_text().count(f"resuming {log.parent}") if out.exists() else 0

    if resumed:
        wait_until(lambda: resumes() >= resumed, 180, f"resume {resumed} before the {how}", proc)
    seen = log_lines(log)
    wait_until(lambda: log_lines(log) > seen, 120, f"progress before the {how}", proc)
    jid = job_id(tmp_path / "slurm")
    if how == "preempt":
        cluster.run("sbatch", "-p", "high", "--exclusive", "-o", "/dev/null", "-J", f"hi-{tmp_path.name}",
                    "--wrap", "sleep 1", check=True)
    else:
        cluster.run("scontrol", "requeue", jid, check=True)
    wait_until(lambda: cluster.run("squeue", "-h", "-j", jid, "-o", "%T").stdout.strip() != "RUNNING",
               90, f"the {how} to stop the job", proc)


def test_chaos_interrupted_training_equals_an_uninterrupted_run_bit_for_bit(slurm_cluster, tmp_path):
    # Real `dimr train`, interrupted whenever it has made progress: pre-empted by a high-priority job
    # (USR2), requeued by scontrol (SIGTERM), pre-empted again. One job id; the same weights as a run
    # nobody touched (one thread each: the thread count changes float reduction order).
    import torch

    spec = ["--preset", "tiny-dimr-2r", "--set", "train.total_kimg=1", "--set", "train.batch_size=32",
            "--set", "train.log_kimg=0.1", "--set", "train.checkpoint_kimg=0.25"]
    env = {**slurm_cluster.env, "OMP_NUM_THREADS": "1"}
    dimr = [sys.executable, "-m", "dimr.cli", "train"]
    reference = subprocess.Popen([*dimr, str(tmp_path / "local"), *spec], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir, t0 = tmp_path / "slurm" / "run", time.monotonic()
    proc = subprocess.Popen(slurm_launcher(tmp_path / "slurm", [*dimr, str(run_dir), *spec], "--expect",
                                           str(run_dir / "network-final.pt")),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "training_log.jsonl"
    for k, how in enumerate(("preempt", "requeue", "preempt")):
        interrupt_after_progress(slurm_cluster, tmp_path, log, how, proc, resumed=k)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    print(f"\nchaos: 3 interruptions, trained in {time.monotonic() - t0:.0f} s")
    jid = job_id(tmp_path / "slurm")
    assert slurm_cluster.sacct_ids("t-slurm") == [jid]
    job_log = (tmp_path / "slurm" / "submitit" / f"{jid}_0_log.out").read_text()
    assert job_log.count(f"resuming {run_dir}") == 3, job_log[-3000:]  # three restarts, each resumed
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines()]
    assert steps == sorted(set(steps)), steps  # the training log is continuous: no step twice, none lost
    got, want = (torch.load(d / "network-final.pt", weights_only=False)
                 for d in (run_dir, tmp_path / "local"))
    assert got["cur_nimg"] == want["cur_nimg"]
    for key in ("ema", "model"):
        for name, tensor in want[key].items():
            assert torch.equal(got[key][name], tensor), (key, name)
