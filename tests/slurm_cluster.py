"""Session fixture `slurm_cluster`: a real single-node SLURM cluster, up once per test session.

Use it in a test module marked `pytest.mark.slurm`:

    pytestmark = pytest.mark.slurm

    def test_something(slurm_cluster):
        subprocess.run(["sbatch", ...], env=slurm_cluster.env)   # or rely on os.environ (see below)
        assert slurm_cluster.queue() == []

What the fixture gives (a `SlurmCluster`):
    dir                    Path of the cluster directory (config in dir/etc, daemon logs in dir/log)
    conf                   Path of slurm.conf; SLURM_CONF is set to it in os.environ for the whole
                           session (undone at the end), so subprocesses find the cluster by themselves
    env                    dict: a copy of os.environ with SLURM_CONF, for subprocess(env=...)
    partitions             ("debug", "high"): debug is the low-priority default (PreemptMode=REQUEUE,
                           GraceTime=60), high preempts it (PreemptMode=OFF); one node, nproc CPUs, gpu:1
    up_s, down_s           bring-up and teardown times in seconds
    run(*argv)             run a SLURM client (squeue, sacct, scancel...) -> CompletedProcess (text)
    queue()                job ids still in the queue (pending, running, completing)
    wait_queue_empty(timeout_s=30) -> bool
    sacct_ids(name)        the distinct job ids ever submitted with job name `name` (accounting lags
                           the controller by up to a second or two; this waits for a first record)
    log_tail(daemon, n=30) last lines of dir/log/<daemon>.log (slurmctld, slurmd, slurmdbd, ...)

Also here: processes_of(path) -> ["pid cmdline", ...] of live processes with `path/` in their argv.

Submitting: run workflow/scripts/submit.py --executor slurm (see tests/test_dispatch_slurm.py) with
`--poll-s 1` to keep tests fast and `--timeout-min 15` (under ~12.5 min submitit counts every USR2
as a time-out). Requeue-to-running takes ~11 s (cred_expire=10). Job ids restart at 1 with each
session: give each test its own submitit folder and job name.

The cluster comes from workflow/slurm/cluster.sh (up/down; every daemon stopped by PID) in a fresh
/tmp/dimr-slurm-* directory, removed afterwards unless DIMR_KEEP_SLURM_DIR=1. If the SLURM programs
are missing the fixture fails (it does not skip) and says to run tools/setup.sh, which installs them.
Teardown cancels all jobs, stops the daemons and fails if any process of the cluster survives.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "workflow" / "slurm" / "cluster.sh"
SETUP_SH = REPO / "tools" / "setup.sh"  # home of the Debian package list (APT_PACKAGES)
PROGRAMS = ("munged", "mungekey", "mariadbd", "slurmdbd", "slurmctld", "slurmd",
            "sbatch", "squeue", "sacct", "scancel", "sinfo", "srun")


@dataclass
class SlurmCluster:
    """A running cluster: its directory, the client environment, and a few client helpers."""

    dir: Path
    env: dict
    up_s: float = 0.0
    down_s: float = 0.0
    partitions: tuple = ("debug", "high")

    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    def run(self, *argv, check=False) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i", check=True).stdout.split()

    def wait_queue_empty(self, timeout_s: float = 30) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.queue():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def sacct_ids(self, name: str, settle_s: float = 10) -> list[str]:
        """Distinct ids of the jobs named `name` (waits up to settle_s for slurmdbd to hear of any)."""
        deadline = time.monotonic() + settle_s
        while True:
            out = self.run("sacct", "-n", "-X", "-P", "-D", "--name", name, "-o", "JobID", check=True).stdout
            if out.strip() or time.monotonic() > deadline:
                return sorted(set(out.split()))
            time.sleep(0.2)

    def final_state(self, job_id: str, settle_s: float = 30) -> str:
        """The job's accounting state once it has ended. slurmctld sends the end to slurmdbd
        asynchronously, so sacct can still say RUNNING (or PENDING) after squeue has let the job go."""
        deadline = time.monotonic() + settle_s
        while True:
            out = self.run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State", check=True).stdout.split()
            state = out[0] if out else ""
            ended = state not in ("", "PENDING", "RUNNING", "REQUEUED", "COMPLETING")
            if ended or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def log_tail(self, daemon: str, n: int = 30) -> str:
        path = self.dir / "log" / f"{daemon}.log"
        if not path.exists():
            path = self.dir / "log" / f"{daemon}.stdout"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def processes_of(cluster_dir: Path) -> list[str]:
    """'pid cmdline' of every live process started for `cluster_dir` (its path in argv or SLURM_CONF)."""
    found, me = [], str(os.getpid())
    needle, conf = str(cluster_dir).encode() + b"/", f"SLURM_CONF={cluster_dir}/etc/slurm.conf".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and cmd and (needle in cmd or conf in environ.split(b"\0")):
            argv = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name} {argv[:160]}")
    return found


def setup_hint() -> str:
    """How to install the SLURM programs: tools/setup.sh, with the packages its APT_PACKAGES names."""
    text = SETUP_SH.read_text() if SETUP_SH.is_file() else ""
    m = re.search(r"^APT_PACKAGES=\((.*)\)$", text, re.M)
    return "run tools/setup.sh" + (f" (it installs: {m.group(1)})" if m else "")


def _cluster_sh(action: str, cluster_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), action, str(cluster_dir)], capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Bring a SLURM cluster up in a fresh directory for the session; always bring it down."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.fail(f"SLURM integration tests need {', '.join(missing)}; {setup_hint()}",
                    pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the test SLURM cluster runs its daemons as root (SlurmUser=root); run the SLURM "
                    "tests as root, e.g. in the project's container", pytrace=False)
    # Not under tmp_path: pytest's /tmp/pytest-of-$USER is 0700 and munged wants a world-executable path.
    cluster_dir = Path(tempfile.mkdtemp(prefix="dimr-slurm-", dir="/tmp"))
    t0 = time.monotonic()
    up = _cluster_sh("up", cluster_dir)
    up_s = time.monotonic() - t0
    mp = pytest.MonkeyPatch()
    cluster = None
    try:
        if up.returncode != 0:
            pytest.fail(f"cluster.sh up {cluster_dir} failed:\n{up.stderr}", pytrace=False)
        mp.setenv("SLURM_CONF", str(cluster_dir / "etc" / "slurm.conf"))
        cluster = SlurmCluster(dir=cluster_dir, env=dict(os.environ), up_s=up_s)
        yield cluster
    finally:
        mp.undo()
        t0 = time.monotonic()
        down = _cluster_sh("down", cluster_dir)
        down_s = time.monotonic() - t0
        if cluster is not None:
            cluster.down_s = down_s
        print(f"\nslurm_cluster: up {up_s:.1f}s, down {down_s:.1f}s ({cluster_dir})")
        leftovers = processes_of(cluster_dir)
        assert down.returncode == 0, f"cluster.sh down failed:\n{down.stderr}"
        assert not leftovers, "processes of the test cluster survived teardown:\n" + "\n".join(leftovers)
        if os.environ.get("DIMR_KEEP_SLURM_DIR") != "1":
            shutil.rmtree(cluster_dir, ignore_errors=True)
