"""Run one command as a submitit job (SLURM or local), wait for it, and never run a stage twice.

A Snakemake rule calls this on the submitting host:

    python workflow/scripts/submit.py --executor slurm --folder RUN/submitit --job-record RUN/job-train.json \
        --name NAME --timeout-min 60 --gpus-per-node 1 [--partition P] [--account A] \
        [--slurm-additional '{"qos": "high"}'] --expect RUN/network-final.pt -- dimr train RUN

Whether the stage is done, running or to be submitted is decided by `stage_status` alone: from the
scheduler (squeue, then sacct: PENDING with its reason, RUNNING, REQUEUED, PREEMPTED, COMPLETED...)
and the stage's outputs, never from a file the job left behind (no result pickle is read). A job that
COMPLETED keeps hard links of its outputs (`.job-<stage>.outputs/<job id>/`); when Snakemake deleted
them (a rerun after a hard kill), they are put back and nothing is submitted. To run a finished stage
again, delete its record. At most one job per stage lives: the decision and the submission happen under
a lock on the record, SLURM jobs carry the stage in their comment and a live one found in the queue is
never doubled, and a job's command runs only while it holds the stage's run lock.

Exit status: 0 only when the job COMPLETED and left its outputs; 1 when it failed, was cancelled or
can never be scheduled (the reason and a fix are printed); 2 for a usage error; 128+N when this
launcher got signal N (it cancels its job first). Preemption, requeue and time limits are not
failures: the job is requeued under the same id and the command, run again, resumes (`dimr train`
exits 75 after saving a checkpoint). Only submitit's public API is used.
"""

import argparse
import fcntl
import hashlib
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
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import submitit

from dimr.errors import EXIT_REQUEUE
from dimr.io import atomic_write_json

ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                 "COMPLETING", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "READY", "RESV_DEL_HOLD"}
# Pending reasons of a request the cluster can never satisfy as asked, and what to change.
NEVER_RUNS = {
    "PartitionConfig": "the partition cannot give what was asked (GPUs, CPUs or memory per node): compare "
                       "`scontrol show partition` with the rule's gpus/cpus_per_task/mem_mb or pick another "
                       "slurm_partition",
    "PartitionTimeLimit": "the runtime exceeds the partition's MaxTime (`sinfo -o '%P %l'`): lower the "
                          "rule's runtime (training requeues and resumes) or pick another slurm_partition",
    "PartitionNodeLimit": "more nodes than the partition allows: lower the rule's nodes or pick another "
                          "slurm_partition",
    "BadConstraints": "no node has the requested features/GRES: lower gpus or drop the constraint",
    "InvalidAccount": "set slurm_account to one of `sacctmgr show assoc user=$USER format=account`",
    "InvalidQOS": "use a QOS of `sacctmgr show assoc user=$USER format=qos`",
    "AccountNotAllowed": "this account may not use the partition: change slurm_account or slurm_partition",
    "QOSMaxWallDurationPerJobLimit": "the runtime exceeds the QOS limit: lower the rule's runtime",
    "AssocMaxWallDurationPerJobLimit": "the runtime exceeds your association's limit: lower the runtime",
}
# How long an end must last to be believed: a pre-empted job is requeued (same id) a moment later,
# unless the site cancels pre-empted jobs.
SETTLE_S = {"PREEMPTED": 60.0}
SETUP_SH = Path(__file__).resolve().parents[2] / "tools" / "setup.sh"  # home of the Debian package list
LAUNCHERS_ENV = "DIMR_LAUNCHERS"  # a folder where each launcher leaves its PID (workflow/rules/common.smk)

# Run as a script, the job's callable lives in __main__ and cloudpickle ships it by value; imported
# (tests, other scripts), this module is not importable inside the job, so ship it by value too.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Stage:
    """The files of one stage, named after its job record RUN/job-<stage>.json."""

    record: Path
    outputs: tuple = ()  # what the job must leave (--expect)

    @property
    def decide_lock(self) -> Path:  # held by a launcher while it decides and submits
        return self.record.with_name(self.record.stem + ".lock")

    @property
    def run_lock(self) -> Path:  # held by the job's rank 0 while its command runs
        return self.record.with_name(self.record.stem + ".running")

    def kept(self, job_id: str) -> Path:
        """Hard links of the outputs of a COMPLETED job, and its exit status (outcome.json)."""
        return self.record.with_name(f".{self.record.stem}.outputs") / str(job_id)

    def kept_copy(self, job_id: str, output: Path) -> Path:
        digest = hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:12]
        return self.kept(job_id) / f"{digest}-{Path(output).name}"

    @property
    def comment(self) -> str:  # the SLURM job comment that names the stage (one live job per comment)
        return "dimr-stage-" + hashlib.sha256(str(self.record.resolve()).encode()).hexdigest()[:16]


def try_lock(path: Path):
    """An open file holding an exclusive flock on `path`, or None if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


# ---------------------------------------------------------------------------------------------
# Inside the job
# ---------------------------------------------------------------------------------------------

class ResumableCommand(submitit.helpers.Checkpointable):
    """Run `argv` as a child process; on SIGUSR2 let it checkpoint (exit 75) and requeue the job."""

    def __init__(self, argv: list[str], stage: Stage):
        self.argv, self.stage = list(argv), stage
        self.outcome = None  # exit code of a child that ended while being checkpointed; see checkpoint()

    def __getstate__(self):
        # The child process, its reaper and the run lock do not travel with the requeued job.
        return {"argv": self.argv, "stage": self.stage, "outcome": self.outcome}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        self._proc, self._rc, self._got_term, self._checkpointing = None, None, False, False
        if env.global_rank == 0:
            self._hold_run_lock(env)
        if self.outcome is not None:  # the child finished while the job was being requeued
            return self._finish(env, self.outcome)
        # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch.distributed's env:// init.
        # All of the node's GPUs stay visible: dimr picks cuda:LOCAL_RANK (the torchrun convention).
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        bypass_term = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda s, f: self._on_term(bypass_term, s, f))
        preempt_sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        if env.global_rank != 0:
            # submitit checkpoints on rank 0 only; the other ranks' children must hear USR2 as well.
            signal.signal(preempt_sig, lambda s, f: self._forward(s))
        print(f"[submit.py] rank {env.global_rank}/{env.num_tasks} of job {env.job_id} runs: "
              f"{shlex.join(self.argv)}", flush=True)
        self._start()
        try:
            while self._rc is None:
                time.sleep(0.2)  # never block in Popen.wait here: the USR2 handler waits on the child
        finally:
            self._stop_child()
        rc = self._rc
        if self._got_term and rc in (EXIT_REQUEUE, -signal.SIGTERM):
            # SIGTERM: a cancel, `scontrol requeue`, or a preemption at a site without
            # preempt_send_user_signal. The command saved its state (75) or has none to save; SLURM
            # knows which it was and requeues the job or ends it, and the launcher asks SLURM.
            print(f"[submit.py] the command stopped on SIGTERM (exit {rc}); the scheduler requeues the job "
                  "or ends it", flush=True)
            sys.exit(EXIT_REQUEUE)
        if rc == EXIT_REQUEUE:
            if env.global_rank != 0:
                return self._await_requeue(env)
            # The command stopped by itself to be resumed: requeue exactly as on a preemption signal.
            print("[submit.py] the command exited 75 (resumable): requeueing", flush=True)
            os.kill(os.getpid(), preempt_sig)
            time.sleep(60)  # the handler requeues and exits; this is never reached
        return self._finish(env, rc)

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
            # 75: saved, resumes; killed by the signal: a command without a handler (`dimr evaluate`)
            # runs again from the start. 0: it finished anyway; else its failure is reported after requeue.
            if self._rc not in (EXIT_REQUEUE, -signal.SIGUSR2):
                self.outcome = self._rc
        return super().checkpoint(*args, **kwargs)

    # -- helpers ---------------------------------------------------------------------------

    def _hold_run_lock(self, env):
        """Run only while no other job of this stage runs (a requeued predecessor may take a moment)."""
        deadline = time.monotonic() + 60
        while (lock := try_lock(self.stage.run_lock)) is None:
            if time.monotonic() > deadline:
                print(f"[submit.py] another job of this stage holds {self.stage.run_lock}: not running a "
                      "second one", file=sys.stderr, flush=True)
                sys.exit(1)
            time.sleep(1)
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock  # held until this process exits
        (self.stage.kept(env.job_id) / "outcome.json").unlink(missing_ok=True)  # a recycled local id

    def _finish(self, env, rc: int) -> int:
        """Keep hard links of the outputs (a COMPLETED stage is never run twice), record rc, exit rc."""
        if env.global_rank == 0:
            kept = self.stage.kept(env.job_id)
            kept.mkdir(parents=True, exist_ok=True)
            for out in self.stage.outputs if rc == 0 else ():
                copy = self.stage.kept_copy(env.job_id, out)
                if Path(out).exists() and not copy.exists():
                    try:
                        os.link(out, copy)
                    except OSError:  # another file system: a copy
                        shutil.copy2(out, copy)
            atomic_write_json(kept / "outcome.json", {"job_id": env.job_id, "rc": rc})
        if rc != 0:
            print(f"[submit.py] {shlex.join(self.argv)} exited {rc}", file=sys.stderr, flush=True)
            sys.exit(rc)  # no traceback after the command's own error; the scheduler records rc
        return rc

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
        self._got_term = True  # a cancel, a requeue or a preemption without USR2: SLURM decides which
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
            sys.exit(144)  # submitit's local controller restarts all tasks on this exit status
        time.sleep(120)  # rank 0 requeues the job, which kills this task
        raise RuntimeError("the command exited 75 (resumable) but rank 0 did not requeue the job in 120 s")


def _die_with_parent():
    """In the child: get SIGTERM if the wrapper dies (Linux prctl PR_SET_PDEATHSIG), e.g. on a SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# On the submitting host: what the scheduler says
# ---------------------------------------------------------------------------------------------

@dataclass
class Status:
    """A job as the scheduler sees it. UNKNOWN: the scheduler could not be asked (never "done")."""

    state: str
    reason: str = ""
    exit_code: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _run(*cmd) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:  # no SLURM here, or a controller that hangs
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def slurm_status(job_id: str) -> Status:
    """squeue first (the controller is current; it keeps ended jobs for MinJobAge), then sacct.

    Not submitit's watcher: it caches a job as finished at its first unfamiliar state (SUSPENDED,
    REQUEUE_HOLD) and reports a job that sacct does not know as UNKNOWN forever.
    """
    q = _run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r")
    queued = q.stdout.strip().splitlines() if q.returncode == 0 else []
    if queued:
        state, _, reason = queued[0].partition("|")
        if state.upper() in ACTIVE_STATES:
            return Status(state.upper(), "" if reason in ("None", "(null)") else reason)
    a = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Reason")
    lines = a.stdout.strip().splitlines() if a.returncode == 0 else []
    if lines:
        state, exit_code, reason = (lines[-1].split("|") + ["", ""])[:3]
        state = state.split()[0].upper()  # "CANCELLED by 0"
        if not queued or queued[0].split("|")[0].upper() == state:
            return Status(state, reason if reason != "None" else "", exit_code)
    if queued:  # sacct lags the controller
        return Status(queued[0].split("|")[0].upper())
    if q.returncode == 0 or "Invalid job id" in q.stderr:
        return Status("GONE")  # neither knows the job: never submitted here, or long purged
    return Status("UNKNOWN", (q.stderr or a.stderr).strip())


def local_status(stage: Stage, job_id: str, job=None) -> Status:
    """A local job: RUNNING while its controller (own job) or its command (the run lock) lives."""
    if job is not None and not job.done():
        return Status("RUNNING")
    for _ in range(3):  # a local requeue restarts the task: the run lock is free for a moment
        lock = try_lock(stage.run_lock)
        if lock is None:
            return Status("RUNNING")
        lock.close()
        outcome = stage.kept(job_id) / "outcome.json"
        if outcome.exists():
            rc = json.loads(outcome.read_text()).get("rc")
            return Status("COMPLETED" if rc == 0 else "FAILED", exit_code=str(rc))
        time.sleep(1.0)
    return Status("GONE")


def stage_status(args, stage: Stage, job_id: str, job=None) -> Status:
    """The one answer to "is this stage's job pending, running or over, and how did it end"."""
    if args.executor == "slurm":
        return slurm_status(job_id)
    return local_status(stage, job_id, job)


def live_stage_jobs(stage: Stage) -> list[str]:
    """Ids of queued or running SLURM jobs of this stage (by their comment), whoever submitted them."""
    out = _run("squeue", "-h", "-o", "%i|%k")
    return [line.split("|")[0] for line in out.stdout.splitlines() if line.split("|", 1)[-1] == stage.comment]


# ---------------------------------------------------------------------------------------------
# On the submitting host: decide, submit, wait, report
# ---------------------------------------------------------------------------------------------

class Interrupted(Exception):
    """This launcher got SIGINT or SIGTERM."""


class Fail(Exception):
    """The job cannot succeed; the message says why and what to change."""


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
    p.add_argument("--max-timeouts", type=int, default=None,
                   help="requeues on reaching the time limit before the job fails (default: no limit)")
    p.add_argument("--signal-delay-s", type=int, default=90,
                   help="seconds before the time limit at which SLURM sends USR2 (save and requeue)")
    p.add_argument("--pending-report-s", type=float, default=300.0,
                   help="report why the job still pends after this many seconds (a request SLURM "
                        "can never satisfy fails at once)")
    p.add_argument("--expect", action="extend", nargs="+", type=Path, default=[], metavar="PATH",
                   help="output the job must leave; kept (hard links) when it completes, so that a "
                        "rerun whose outputs Snakemake deleted puts them back instead of running again")
    p.add_argument("--poll-s", type=float, default=15.0, help="seconds between state checks (squeue)")
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


def make_executor(args, stage: Stage) -> submitit.AutoExecutor:
    # submitit's default gives up after 3 time limits; training longer than 4 limits is normal.
    cap = 10**9 if args.max_timeouts is None else args.max_timeouts
    ex = submitit.AutoExecutor(folder=args.folder, cluster=args.executor, slurm_max_num_timeout=cap,
                               local_max_num_timeout=cap)
    params = dict(name=args.name, timeout_min=args.timeout_min, nodes=args.nodes,
                  tasks_per_node=max(1, args.gpus_per_node), cpus_per_task=args.cpus_per_task)
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.executor == "slurm":
        params.update(slurm_signal_delay_s=args.signal_delay_s, slurm_comment=stage.comment)
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.account:
        params["slurm_account"] = args.account
    if args.slurm_additional:
        params["slurm_additional_parameters"] = args.slurm_additional
    ex.update_parameters(**params)
    return ex


def read_record(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
        rec["tasks"] = int(rec["tasks"])
        if rec["executor"] not in ("local", "slurm") or not rec["job_id"] or not rec["folder"]:
            raise ValueError("bad executor, job_id or folder")
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"submit.py: unreadable job record {path} ({e!r}); delete it to submit anew")
    return rec


def restore_outputs(stage: Stage, job_id: str, missing: list[Path]) -> bool:
    """Put back the outputs of a COMPLETED job from its hard links; False if any is not kept."""
    copies = [stage.kept_copy(job_id, out) for out in missing]
    if not all(c.exists() for c in copies):
        return False
    for out, copy in zip(missing, copies):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(copy, out)
        except OSError:
            shutil.copy2(copy, out)
    return True


def decide(args, stage: Stage):
    """(job id to wait on, or None to submit; or an exit status when there is nothing to run)."""
    if not args.job_record.exists():
        return None
    rec = read_record(args.job_record)
    jid = rec["job_id"]
    same = (rec["executor"] == args.executor and Path(rec["folder"]) == args.folder.resolve()
            and rec.get("command") == args.command)
    status = stage_status(args, stage, jid) if rec["executor"] == args.executor else Status("GONE")
    if status.state == "UNKNOWN":  # rather stop than risk running the same job twice
        sys.exit(f"submit.py: cannot ask SLURM about job {jid} (recorded in {args.job_record}): "
                 f"{status.reason}; is SLURM_CONF set and the controller up?")
    if status.state in SETTLE_S:  # may be requeued: wait and see (wait() settles it)
        status = Status("PENDING", status.state)
    if status.active and not same:
        sys.exit(f"submit.py: job {jid} recorded in {args.job_record} runs another command "
                 f"({shlex.join(rec.get('command', []))}) and is {status.state}; cancel it "
                 f"(scancel {jid}) or wait for it, then rerun")
    if status.active:
        print(f"submit.py: job {jid}: re-attaching ({status.state})", flush=True)
        return jid
    if status.state == "COMPLETED" and same:
        missing = [p for p in args.expect if not p.exists()]
        if not missing:
            print(f"submit.py: job {jid} already finished successfully; nothing to do", flush=True)
            return 0
        if restore_outputs(stage, jid, missing):
            print(f"submit.py: job {jid} already finished; put back {[str(p) for p in missing]} from its "
                  f"kept copies (deleted by a rerun); nothing to do", flush=True)
            return 0
        print(f"submit.py: job {jid} finished but {[str(p) for p in missing]} are gone; running it again",
              flush=True)
        return None
    print(f"submit.py: job {jid}: {status.state}; submitting again", flush=True)
    return None


def submit(args, stage: Stage):
    if args.executor == "slurm":
        if not all(shutil.which(p) for p in ("sbatch", "sacct", "squeue")):
            sys.exit("submit.py: --executor slurm needs sbatch and sacct on PATH, and SLURM_CONF pointing at "
                     "the cluster (workflow/slurm/cluster.sh up DIR prints it); to install SLURM, "
                     + setup_hint())
        live = live_stage_jobs(stage)
        if live:
            sys.exit(f"submit.py: job {', '.join(live)} of this stage ({args.job_record}) is already in the "
                     f"queue but not in its record; wait for it or cancel it (scancel {' '.join(live)})")
    else:
        lock = try_lock(stage.run_lock)
        if lock is None:
            sys.exit(f"submit.py: a job of this stage is running ({stage.run_lock} is locked) but is not in "
                     f"{args.job_record}; wait for it or stop it, then rerun")
        lock.close()
    shutil.rmtree(stage.kept("x").parent, ignore_errors=True)  # the kept outputs of earlier jobs
    try:
        job = make_executor(args, stage).submit(ResumableCommand(args.command, stage))
    except RuntimeError as e:  # submitit's FailedJobError: sbatch refused the request
        raise Fail(f"sbatch refused the job: {str(e).strip()}") from None
    # Persist the id at once, so a rerun re-attaches instead of submitting twice.
    atomic_write_json(args.job_record, {
        "executor": args.executor, "job_id": str(job.job_id), "folder": str(args.folder.resolve()),
        "tasks": job.num_tasks, "name": args.name, "command": args.command,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    print(f"submit.py: submitted job {job.job_id} ({args.executor}); logs in {args.folder}", flush=True)
    return job


def wait(args, stage: Stage, jid: str, job, stop: dict) -> Status:
    """Poll until the job is over: an end seen twice in a row (a requeue passes through ended states)."""
    pending_since, reported, ended = time.monotonic(), None, None
    while True:
        if stop["signum"]:
            raise Interrupted
        status = stage_status(args, stage, jid, job)
        if status.state == "PENDING":
            waited = time.monotonic() - pending_since
            if status.reason in NEVER_RUNS and reported == status.reason:
                raise Fail(f"job {jid} can never start as asked: SLURM says {status.reason}: "
                           f"{NEVER_RUNS[status.reason]}")
            if status.reason in NEVER_RUNS or (waited >= args.pending_report_s and status.reason != reported):
                print(f"submit.py: job {jid} pending for {waited:.0f} s: {status.reason}", file=sys.stderr,
                      flush=True)
                reported = status.reason
        else:
            pending_since = time.monotonic()
        if status.active or status.state == "UNKNOWN":
            ended = None
        elif ended is None or ended[0] != status.state:
            ended = (status.state, time.monotonic())
            time.sleep(min(2.0, args.poll_s))
            continue
        elif time.monotonic() - ended[1] >= SETTLE_S.get(status.state, 0.0):
            return status
        time.sleep(args.poll_s if args.executor == "slurm" else min(1.0, args.poll_s))  # local: cheap to ask


def report(args, jid: str, job, status: Status) -> int:
    """0 if the job COMPLETED and left its outputs; otherwise say why (state, exit code, log tail)."""
    if status.state == "COMPLETED":
        deadline = time.monotonic() + 10  # outputs may lag the state a little (NFS)
        while (missing := [str(p) for p in args.expect if not p.exists()]) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not missing:
            print(f"submit.py: job {jid} finished: {shlex.join(args.command)}", flush=True)
            return 0
        print(f"submit.py: job {jid} completed but left no {missing}", file=sys.stderr)
    else:
        code = f", exit status {status.exit_code.split(':')[0]}" if status.exit_code else ""
        reason = f", reason {status.reason}" if status.reason else ""
        print(f"submit.py: job {jid} failed: state {status.state}{code}{reason}", file=sys.stderr)
    for k in range(job.num_tasks):
        print_tail(job.task(k).paths.stderr)
    return 1


def print_tail(path: Path, lines: int = 30):
    if path.exists():
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"---- last {len(tail)} lines of {path} ----", *tail, "----", sep="\n", file=sys.stderr)
    else:
        print(f"(no log at {path})", file=sys.stderr)


def cancel(args, stage: Stage, jid: str, job, why: str = "interrupted"):
    """Cancel the job and wait (up to 30 s) until the scheduler has let go of it."""
    print(f"submit.py: {why}; cancelling job {jid}", file=sys.stderr, flush=True)
    if args.executor == "slurm" or job is not None:
        job.cancel(check=False)
    else:  # a local job of an earlier launcher: its command's PID is in the run lock it holds
        pid = stage.run_lock.read_text().strip() if stage.run_lock.exists() else ""
        if pid.isdigit() and local_status(stage, jid).state == "RUNNING":
            os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if args.executor == "slurm":  # squeue, not sacct: a CANCELLED job may still be COMPLETING
            out = _run("squeue", "-h", "-j", jid, "-o", "%T")
            if not out.stdout.strip() and (out.returncode == 0 or "Invalid job id" in out.stderr):
                return
        elif local_status(stage, jid, job).state != "RUNNING":
            return
        time.sleep(0.5)
    print(f"submit.py: job {jid} is still in the queue 30 s after scancel", file=sys.stderr)


def job_handle(args, jid: str, tasks: int):
    """submitit's handle of a recorded job (logs, cancel); a local job of an earlier launcher has none."""
    if args.executor == "slurm":
        return submitit.SlurmJob(args.folder, jid, tasks=list(range(tasks)))
    return None


def register():
    """Leave this launcher's PID where the workflow's signal handler finds it (kill -TERM snakemake)."""
    folder = os.environ.get(LAUNCHERS_ENV)
    if not folder:
        return None
    path = Path(folder) / str(os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpgrp()))
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    stage = Stage(args.job_record, tuple(args.expect))
    stop = {"signum": 0, "cancelling": False}

    def on_signal(signum, frame):
        if stop["cancelling"]:  # a second Ctrl-C: scancel was sent, stop waiting for it
            raise KeyboardInterrupt
        stop["signum"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    registered = register()
    try:
        return _main(args, stage, stop)
    except Fail as e:
        print(f"submit.py: {e}", file=sys.stderr)
        return 1
    finally:
        if registered is not None:
            registered.unlink(missing_ok=True)


def _main(args, stage: Stage, stop: dict) -> int:
    decide_lock = None
    while (decide_lock := try_lock(stage.decide_lock)) is None:  # another launcher is deciding
        if stop["signum"]:
            return 128 + stop["signum"]
        time.sleep(0.2)
    job = None
    try:
        jid = decide(args, stage)
        if isinstance(jid, int):
            return jid
        if jid is None:
            job = submit(args, stage)
            jid = str(job.job_id)
        else:
            job = job_handle(args, jid, read_record(args.job_record)["tasks"])
    finally:
        decide_lock.close()
    try:
        status = wait(args, stage, jid, job, stop)
    except (Interrupted, Fail) as e:
        stop["cancelling"] = True
        try:
            cancel(args, stage, jid, job, "it can never start" if isinstance(e, Fail) else "interrupted")
        except KeyboardInterrupt:
            pass
        if isinstance(e, Fail):
            raise
        return 128 + stop["signum"]
    if job is None:  # a local job of an earlier launcher: its logs
        job = submitit.LocalJob(args.folder, jid, tasks=list(range(read_record(args.job_record)["tasks"])))
    return report(args, jid, job, status)


if __name__ == "__main__":
    sys.exit(main())
