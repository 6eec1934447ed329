"""The launcher (workflow/scripts/submit.py) with submitit's local executor: no SLURM needed."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import processes_of

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "workflow" / "scripts" / "submit.py"
COUNTER = REPO / "tests" / "fixtures" / "counter_job.py"


def launcher(run_dir: Path, command: list, *opts, executor="local") -> list:
    return [sys.executable, str(SUBMIT), "--executor", executor, "--folder", str(run_dir / "submitit"),
            "--job-record", str(run_dir / "job.json"), "--name", f"t-{run_dir.name}", "--timeout-min", "15",
            "--poll-s", "1", *opts, "--", *command]


def counter(state_dir: Path, steps: int, sleep: float = 0.05, *extra) -> list:
    return [sys.executable, str(COUNTER), str(state_dir), "--steps", str(steps), "--sleep", str(sleep),
            *extra]


def starts(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (state_dir / "starts.jsonl").read_text().splitlines()]


def count(state_dir: Path) -> int:
    f = state_dir / "counter.json"
    return json.loads(f.read_text())["count"] if f.exists() else 0


def run(cmd, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_local_success_is_recorded_and_a_rerun_submits_nothing(tmp_path):
    cmd = launcher(tmp_path, counter(tmp_path / "state", 3))
    first = run(cmd)
    assert first.returncode == 0, first.stderr
    assert count(tmp_path / "state") == 3
    record = json.loads((tmp_path / "job.json").read_text())
    assert record["executor"] == "local" and record["job_id"]
    assert record["command"] == cmd[cmd.index("--") + 1:]
    second = run(cmd)
    assert second.returncode == 0, second.stderr
    assert "already finished" in second.stdout
    assert len(starts(tmp_path / "state")) == 1  # the command did not run again


def test_finished_output_deleted_by_a_rerun_is_put_back_not_run_again(tmp_path):
    # Snakemake deletes a rule's outputs before it reruns the rule (rerun-incomplete after a hard kill):
    # the job COMPLETED, so its kept copy comes back and nothing runs twice.
    state = tmp_path / "state"
    cmd = launcher(tmp_path, counter(state, 2), "--expect", str(state / "counter.json"))
    assert run(cmd).returncode == 0
    (state / "counter.json").unlink()
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    assert "put back" in again.stdout and "nothing to do" in again.stdout
    assert len(starts(state)) == 1 and count(state) == 2


def test_finished_stage_whose_record_is_deleted_runs_again(tmp_path):
    state = tmp_path / "state"
    cmd = launcher(tmp_path, counter(state, 2), "--expect", str(state / "counter.json"))
    assert run(cmd).returncode == 0
    (state / "counter.json").unlink()
    (tmp_path / "job.json").unlink()  # the documented way to run a finished stage again
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    assert "submitted job" in again.stdout
    assert len(starts(state)) == 2 and count(state) == 2


def test_local_nonzero_exit_is_a_failure(tmp_path):
    res = run(launcher(tmp_path, counter(tmp_path / "state", 2, 0.05, "--exit-code", "3")))
    assert res.returncode == 1
    assert "exit status 3" in res.stderr
    assert "failing with exit code 3" in res.stderr  # the tail of the job's stderr log is shown


def test_local_exit_75_requeues_and_resumes(tmp_path):
    state = tmp_path / "state"
    res = run(launcher(tmp_path, counter(state, 6, 0.05, "--stop-at", "2")))
    assert res.returncode == 0, res.stderr
    assert count(state) == 6
    assert [s["resumed_from"] for s in starts(state)] == [0, 2]


def test_local_one_process_per_gpu_with_torch_distributed_env(tmp_path):
    out = tmp_path / "env.jsonl"
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    probe = [sys.executable, "-c", f"import json, os, sys; open(sys.argv[1], 'a').write("
             f"json.dumps({{k: os.environ.get(k) for k in {keys!r}}}) + '\\n')", str(out)]
    res = run(launcher(tmp_path, probe, "--gpus-per-node", "2"))
    assert res.returncode == 0, res.stderr
    envs = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda e: e["RANK"])
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in envs] == [("0", "0", "2"), ("1", "1", "2")]
    assert len({(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs}) == 1 and envs[0]["MASTER_PORT"]


def test_local_interrupted_launcher_stops_its_job(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen(launcher(tmp_path, counter(state, 10_000, 0.05)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while count(state) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "cancelling job" in err
    time.sleep(1.0)
    stopped_at = count(state)
    time.sleep(1.0)
    assert count(state) == stopped_at < 10_000  # nothing keeps counting behind our back
    assert not processes_of(tmp_path), processes_of(tmp_path)  # no controller, wrapper or command left


def test_launcher_refuses_a_missing_command(tmp_path):
    res = run(launcher(tmp_path, []))
    assert res.returncode == 2 and "no command given" in res.stderr
    assert not (tmp_path / "job.json").exists()


@pytest.mark.parametrize("bad", [["--timeout-min", "0"], ["--slurm-additional", "[1]"]])
def test_launcher_refuses_bad_options(tmp_path, bad):
    res = run(launcher(tmp_path, ["true"], *bad))
    assert res.returncode == 2, res.stderr


def test_local_rerun_after_a_killed_launcher_reattaches(tmp_path):
    state = tmp_path / "state"
    cmd = launcher(tmp_path, counter(state, 40, 0.05))
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while count(state) < 2:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    first.kill()  # SIGKILL: no chance to cancel; the local job's controller keeps running
    first.wait()
    second = run(cmd)
    assert second.returncode == 0, second.stderr
    assert "re-attaching" in second.stdout
    assert count(state) == 40 and len(starts(state)) == 1  # one run, finished, not restarted


def test_unreadable_job_record_is_an_error_not_a_resubmission(tmp_path):
    (tmp_path / "job.json").write_text("{not json")
    res = run(launcher(tmp_path, ["true"]))
    assert res.returncode == 1 and "unreadable job record" in res.stderr and "delete it" in res.stderr
    assert not (tmp_path / "submitit").exists()


def test_wait_believes_an_end_only_when_it_lasts(monkeypatch):
    # A requeue passes through ended states (PREEMPTED, then PENDING): only a lasting end counts.
    import importlib.util

    spec = importlib.util.spec_from_file_location("submit", SUBMIT)
    submit = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "submit", submit)
    spec.loader.exec_module(submit)
    monkeypatch.setattr(submit, "SETTLE_S", {"PREEMPTED": 0.3})
    args = submit.parse_args(["--folder", "f", "--job-record", "r.json", "--timeout-min", "1",
                              "--poll-s", "0.01", "--", "true"])

    def states(*names):
        seq = iter(names)
        return lambda *a, **k: submit.Status(next(seq, names[-1]))

    monkeypatch.setattr(submit, "stage_status", states("RUNNING", *["PREEMPTED"] * 5, "PENDING", "RUNNING",
                                                       "COMPLETED"))
    assert submit.wait(args, None, "1", None, {"signum": 0}).state == "COMPLETED"
    monkeypatch.setattr(submit, "stage_status", states("RUNNING", "PREEMPTED"))  # cancelled on preemption
    t0 = time.monotonic()
    assert submit.wait(args, None, "1", None, {"signum": 0}).state == "PREEMPTED"
    assert time.monotonic() - t0 >= 0.3
