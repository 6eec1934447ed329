"""Pre-emption for commands that save their progress as they go or have little to lose.

SLURM sends SIGUSR2 before a pre-emption or a time limit (submitit's `--signal`), and SIGTERM on
`scontrol requeue` or a pre-emption without the user signal. Such a command stops at once and exits
dimr.errors.EXIT_REQUEUE; the launcher requeues the job and the same command resumes. `dimr eval`,
`eval --curve`, `curve` and `sample` drop the batch in flight and keep the finished ones
(dimr.sampling.batch_store); `dimr fidnet` and `reference` write their outputs only at the end and start
again (minutes at most at the tiny scale). `dimr train` checks a flag per step instead (it must save
its state first).
"""

import contextlib
import signal


class Preempted(Exception):
    def __init__(self, signum: int):
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def raise_on_preemption():
    """Within the block, SIGUSR2 and SIGTERM raise Preempted; the previous handlers come back after."""
    def handler(signum, frame):
        raise Preempted(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)

