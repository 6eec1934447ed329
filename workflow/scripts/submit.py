"""Run one command as a submitit job (SLURM or local), wait for it, and never submit it twice.

A Snakemake rule calls this on the submitting host:

    python workflow/scripts/submit.py --executor slurm --folder RUN/submitit --job-record RUN/job.json \
        --name NAME --timeout-min 60 --gpus-per-node 1 [--partition P] [--account A] \
        [--slurm-additional '{"qos": "high"}'] -- dimr train RUN

Exit status: 0 only when the command exited 0 (on every task); 1 when the job failed or was lost
(cancelled, node failure, out of memory); 2 for a usage error; 128+N when this launcher got signal N
(it cancels its job first). Preemption and time limits are not failures: the job is requeued under
the same id and the command, run again, resumes (`dimr train` exits 75 after saving a checkpoint).
It relies on submitit's documented local and SLURM executors.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import submitit
from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE, LocalJob

from dimr.errors import EXIT_REQUEUE
from dimr.io import atomic_write_json

ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                 "COMPLETING", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "READY"}
SETUP_SH = Path(__file__).resolve().parents[2] / "tools" / "setup.sh"  # home of the Debian package list

# Run as a script, the job's callable lives in __main__ and cloudpickle ships it by value; imported
# (tests, other scripts), this module is not importable inside the job, so ship it by value too.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------------------------
# Inside the job
# ---------------------------------------------------------------------------------------------

class ResumableCommand(submitit.helpers.Checkpointable):
    """Run `argv` as a child process; on SIGUSR2 let it checkpoint (exit 75) and requeue the job."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)
        self.outcome = None  # exit code of a child that ended while being checkpointed; see checkpoint()

    def __getstate__(self):
        # The child process and its reaper do not travel with the requeued job.
        return {"argv": self.argv, "outcome": self.outcome}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __call__(self) -> int:
        if self.outcome is not None:  # the child finished while the job was being requeued
            return self._finish(self.outcome)
        env = submitit.JobEnvironment()
        # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch.distributed's env:// init.
        # All of the node's GPUs stay visible: dimr picks cuda:LOCAL_RANK (the torchrun convention).
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        self._proc, self._rc, self._got_term, self._checkpointing = None, None, False, False
        bypass_term = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda s, f: self._on_term(bypass_term, s, f))
        if env.global_rank != 0:
            # submitit checkpoints on rank 0 only; the other ranks' children must hear USR2 as well.
            signal.signal(signal.SIGUSR2, lambda s, f: self._forward(s))
        print(f"[submit.py] rank {env.global_rank}/{env.num_tasks} of job {env.job_id} runs: "
              f"{shlex.join(self.argv)}", flush=True)
        self._start()
        try:
            while self._rc is None:
                time.sleep(0.2)  # never block in Popen.wait here: the USR2 handler waits on the child
        finally:
            self._stop_child()
        rc = self._rc
        if rc == EXIT_REQUEUE and not self._got_term:
            if env.global_rank != 0:
                return self._await_requeue(env)
            # The command stopped by itself to be resumed: requeue exactly as on a USR2.
            print("[submit.py] the command exited 75 (resumable): requeueing", flush=True)
            os.kill(os.getpid(), submitit.JobEnvironment._usr_sig())
            time.sleep(60)  # the handler requeues and exits; this is never reached
        if rc == EXIT_REQUEUE:
            raise RuntimeError(f"{shlex.join(self.argv)} saved and stopped on SIGTERM (exit 75): the job was "
                               "cancelled, not preempted, so it is not requeued")
        return self._finish(rc)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Forward SIGUSR2 to the child, wait until it has saved and exited, then requeue."""
        self._checkpointing = True
        if getattr(self, "_proc", None) is not None:  # else USR2 came before the child started
            self._forward(signal.SIGUSR2)
            t0 = time.monotonic()
            while self._rc is None:  # SLURM's grace time (or KillWait) bounds this wait
                time.sleep(0.2)
            print(f"[submit.py] the command exited {self._rc} {time.monotonic() - t0:.1f}s after SIGUSR2",
                  flush=True)
            if self._rc != EXIT_REQUEUE:
                self.outcome = self._rc  # 0: it finished anyway; else report its failure after requeue
        return super().checkpoint(*args, **kwargs)

    # -- helpers ---------------------------------------------------------------------------

    def _start(self):
        self._proc = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)  # stdout/stderr: the job's logs
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self):
        self._rc = self._proc.wait()  # the only place that waits on the child

    def _forward(self, signum):
        if self._proc is not None and self._rc is None:
            try:
                self._proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def _on_term(self, previous, signum, frame):
        self._got_term = True  # a cancel (or a requeue's kill), not a preemption: exit 75 is not resumable
        self._forward(signum)
        if callable(previous):
            previous(signum, frame)

    def _stop_child(self):
        """Leave no orphan when the wrapper itself is interrupted (KeyboardInterrupt, SystemExit)."""
        if self._rc is not None or self._checkpointing:
            return
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._rc is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self._forward(signal.SIGKILL)

    def _await_requeue(self, env) -> int:
        if env.cluster == "local":
            sys.exit(LOCAL_REQUEUE_RETURN_CODE)  # the controller restarts all tasks
        time.sleep(120)  # rank 0 requeues the job, which kills this task
        raise RuntimeError("the command exited 75 (resumable) but rank 0 did not requeue the job in 120 s")

    def _finish(self, rc: int) -> int:
        if rc != 0:
            raise subprocess.CalledProcessError(rc, self.argv)
        return rc


def _die_with_parent():
    """In the child: get SIGTERM if the wrapper dies (Linux prctl PR_SET_PDEATHSIG), e.g. on a SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# On the submitting host
# ---------------------------------------------------------------------------------------------

class _PidProcess:
    """A Popen look-alike for the local controller of an earlier launcher (to re-attach to it)."""

    def __init__(self, pid: int, folder: str):
        self.pid, self.folder = pid, folder

    def poll(self):
        """None while the controller of `folder` runs (a recycled PID does not count), else 0."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return 0
        mine = b"submitit.local._local" in cmd and self.folder.encode() in cmd
        return None if mine and state not in "ZX" else 0

    def send_signal(self, signum):
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


class Interrupted(Exception):
    """This launcher got SIGINT or SIGTERM."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                usage="%(prog)s [options] -- COMMAND [ARG...]")
    p.add_argument("--executor", choices=("local", "slurm"), default="local")
    p.add_argument("--folder", required=True, type=Path, help="submitit folder (scripts, pickles, logs)")
    p.add_argument("--job-record", required=True, type=Path, help="JSON file that keeps the job id")
    p.add_argument("--name", default="dimr", help="job name")
    p.add_argument("--timeout-min", required=True, type=int, help="time limit in minutes (always set)")
    p.add_argument("--gpus-per-node", type=int, default=0,
                   help="one task (process) per GPU; with --executor local, 0 hides the GPUs")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--mem-gb", type=float, default=None)
    p.add_argument("--partition", default=None, help="SLURM partition (ignored by --executor local)")
    p.add_argument("--account", default=None, help="SLURM account (ignored by --executor local)")
    p.add_argument("--slurm-additional", type=json.loads, default=None,
                   help='JSON object of extra sbatch options, e.g. \'{"qos": "high"}\'')
    p.add_argument("--expect", action="extend", nargs="+", type=Path, default=[], metavar="PATH",
                   help="output the job must leave; a finished record whose outputs are gone (Snakemake "
                        "deletes them before a forced rerun) is run again")
    p.add_argument("--poll-s", type=float, default=15.0, help="seconds between forced state checks (sacct)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given: put it after --, e.g. -- dimr train RUN_DIR")
    if args.timeout_min < 1:
        p.error(f"--timeout-min must be at least 1 (got {args.timeout_min})")
    if args.slurm_additional is not None and not isinstance(args.slurm_additional, dict):
        p.error("--slurm-additional must be a JSON object of sbatch options")
    return args


def setup_hint() -> str:
    """How to install the SLURM programs: tools/setup.sh, with the packages its APT_PACKAGES names."""
    text = SETUP_SH.read_text() if SETUP_SH.is_file() else ""
    m = re.search(r"^APT_PACKAGES=\((.*)\)$", text, re.M)
    return "run tools/setup.sh" + (f" (it installs: {m.group(1)})" if m else "")


def make_executor(args) -> submitit.AutoExecutor:
    if args.executor == "slurm" and not all(shutil.which(p) for p in ("sbatch", "sacct", "squeue")):
        sys.exit("submit.py: --executor slurm needs sbatch and sacct on PATH, and SLURM_CONF pointing at the "
                 "cluster (workflow/slurm/cluster.sh up DIR prints it); to install SLURM, " + setup_hint())
    ex = submitit.AutoExecutor(folder=args.folder, cluster=args.executor)
    params = dict(name=args.name, timeout_min=args.timeout_min, nodes=args.nodes,
                  tasks_per_node=max(1, args.gpus_per_node), cpus_per_task=args.cpus_per_task)
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.account:
        params["slurm_account"] = args.account
    if args.slurm_additional:
        params["slurm_additional_parameters"] = args.slurm_additional
    ex.update_parameters(**params)
    return ex


def job_from_record(rec: dict):
    """The submitit Job of a record (without submitting anything)."""
    tasks = list(range(rec["tasks"]))
    if rec["executor"] == "slurm":
        return submitit.SlurmJob(rec["folder"], rec["job_id"], tasks=tasks)
    return LocalJob(rec["folder"], rec["job_id"], tasks=tasks,
                    process=_PidProcess(int(rec["job_id"]), str(rec["folder"])))


def slurm_state(job_id: str) -> str:
    """The job's state from sacct, else squeue (sacct lags, or lost it); GONE if neither knows the job.

    Not submitit's watcher: it caches a job as finished at its first unfamiliar state (SUSPENDED,
    REQUEUE_HOLD) and reports a job that sacct does not know as UNKNOWN forever. UNKNOWN here means
    the scheduler could not be asked, never that the job is done.
    """
    out = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State")
    lines = out.stdout.strip().splitlines()
    state = lines[-1].split()[0].upper() if out.returncode == 0 and lines else "UNKNOWN"  # "CANCELLED by 0"
    if state not in ("UNKNOWN", "PREEMPTED"):
        return state
    # sacct may not know a new job yet, and PREEMPTED lasts until a requeued job runs again (or for
    # good where preemption cancels): the controller knows better.
    out = _run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T")
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.split()[0].upper()
    if state == "PREEMPTED":
        return state
    return "GONE" if out.returncode == 0 or "Invalid job id" in out.stderr else "UNKNOWN"


def _run(*cmd) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:  # no SLURM here, or a controller that hangs
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def has_results(job) -> bool:
    return all(job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks))


def succeeded(job) -> bool:
    """Whether every task left a result and none of them is an error."""
    return has_results(job) and all(job.task(k).exception() is None for k in range(job.num_tasks))


def read_record(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
        rec["tasks"] = int(rec["tasks"])
        if rec["executor"] not in ("local", "slurm") or not rec["job_id"] or not rec["folder"]:
            raise ValueError("bad executor, job_id or folder")
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"submit.py: unreadable job record {path} ({e!r}); delete it to submit anew")
    return rec


def reattach(args, rec: dict):
    """(job, "attach" | "done") for a record worth keeping, or (None, reason) to submit anew."""
    same = (rec.get("executor") == args.executor and Path(rec.get("folder", "")) == args.folder.resolve()
            and rec.get("command") == args.command)
    job = job_from_record(rec)
    if rec["executor"] == "slurm":
        state = slurm_state(job.job_id)
        if state == "UNKNOWN":  # rather stop than risk running the same job twice
            sys.exit(f"submit.py: cannot ask SLURM about job {job.job_id} (recorded in {args.job_record}); "
                     "is SLURM_CONF set and the controller up? Delete the record if that job is gone.")
        active = state in ACTIVE_STATES and not has_results(job)
    else:
        active = job.state == "RUNNING"  # the controller of an earlier launcher still runs
    if active and not same:
        sys.exit(f"submit.py: job {rec['job_id']} recorded in {args.job_record} runs another command "
                 f"({shlex.join(rec.get('command', []))}) and is still active; cancel it "
                 f"(scancel {rec['job_id']}) or wait for it, then rerun")
    if active:
        return job, "attach"
    if same and succeeded(job):
        return job, "done"
    return None, "the recorded job is no longer active"


def submit(args):
    ex = make_executor(args)
    job = ex.submit(ResumableCommand(args.command))
    # Persist the id at once, so a rerun re-attaches instead of submitting twice.
    atomic_write_json(args.job_record, {
        "executor": args.executor, "job_id": str(job.job_id), "folder": str(args.folder.resolve()),
        "tasks": job.num_tasks, "name": args.name, "command": args.command,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return job


def wait(job, args, stop: dict) -> None:
    """Poll until the job is over: its result files every second, the scheduler every poll_s seconds."""
    last_asked = time.monotonic()
    while True:
        if stop["signum"]:
            raise Interrupted
        if has_results(job):
            return
        if time.monotonic() - last_asked >= args.poll_s:
            last_asked = time.monotonic()
            if args.executor == "local":
                if job.done(force_check=True):
                    return
            elif slurm_state(job.job_id) not in ACTIVE_STATES | {"UNKNOWN"}:
                return
        time.sleep(1.0)


def report(job, args) -> int:
    """0 if every task succeeded; otherwise print why (state, error, stderr tail) and return 1."""
    state = slurm_state(job.job_id) if args.executor == "slurm" else job.state
    for k in range(job.num_tasks):
        task = job.task(k)
        for _ in range(10):  # a finished job's result file may lag its state a little (NFS)
            if task.paths.result_pickle.exists():
                break
            time.sleep(0.5)
        if not task.paths.result_pickle.exists():
            print(f"submit.py: job {job.job_id} (task {k}) was lost without a result: state {state}",
                  file=sys.stderr)
            print_tail(task.paths.stderr)
            return 1
        err = task.exception()
        if err is not None:
            last = str(err).strip().splitlines()
            why = next((ln for ln in reversed(last) if "Error" in ln), last[-1] if last else "")
            print(f"submit.py: job {job.job_id} (task {k}) failed: state {state}: {why.strip()}",
                  file=sys.stderr)
            print_tail(task.paths.stderr)
            return 1
    print(f"submit.py: job {job.job_id} finished: {shlex.join(args.command)}", flush=True)
    return 0


def print_tail(path: Path, lines: int = 30):
    if path.exists():
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"---- last {len(tail)} lines of {path} ----", *tail, "----", sep="\n", file=sys.stderr)
    else:
        print(f"(no log at {path})", file=sys.stderr)


def cancel(job, args):
    """Cancel the job and wait (up to 30 s) until the scheduler has let go of it."""
    print(f"submit.py: interrupted; cancelling job {job.job_id}", file=sys.stderr, flush=True)
    job.cancel(check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if args.executor == "slurm":  # squeue, not sacct: a CANCELLED job may still be COMPLETING
            out = _run("squeue", "-h", "-j", job.job_id, "-o", "%T")
            if not out.stdout.strip() and (out.returncode == 0 or "Invalid job id" in out.stderr):
                return
        elif job.done():
            return
        time.sleep(0.5)
    print(f"submit.py: job {job.job_id} is still in the queue 30 s after scancel", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop = {"signum": 0, "cancelling": False}

    def on_signal(signum, frame):
        if stop["cancelling"]:  # a second Ctrl-C: scancel was sent, stop waiting for it
            raise KeyboardInterrupt
        stop["signum"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    job = None
    if args.job_record.exists():
        rec = read_record(args.job_record)
        job, verdict = reattach(args, rec)
        missing = [str(p) for p in args.expect if not p.exists()]
        if verdict == "done" and missing:
            print(f"submit.py: job {job.job_id} finished but {missing} are gone; running it again",
                  flush=True)
            job = None
        elif verdict == "done":
            print(f"submit.py: job {job.job_id} already finished successfully; nothing to do", flush=True)
            return 0
        print(f"submit.py: job {rec['job_id']}: " +
              ("re-attaching" if job is not None else f"{verdict}; submitting again"), flush=True)
    if job is None:
        job = submit(args)
        print(f"submit.py: submitted job {job.job_id} ({args.executor}); logs in {args.folder}", flush=True)
    try:
        wait(job, args, stop)
    except Interrupted:
        stop["cancelling"] = True
        try:
            cancel(job, args)
        except KeyboardInterrupt:
            pass
        return 128 + stop["signum"]
    return report(job, args)


if __name__ == "__main__":
    sys.exit(main())
