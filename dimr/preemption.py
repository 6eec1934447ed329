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
import sys

from dimr.errors import EXIT_REQUEUE

PREEMPTED = object()  # what run_requeueable returns when the command was stopped


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



def run_requeueable(command: str, kept: str, fn):
    """fn() under raise_on_preemption: its result, or PREEMPTED after printing why `command` stops and what
    it `kept` (the caller then exits EXIT_REQUEUE and the launcher requeues it)."""
    try:
        with raise_on_preemption():
            return fn()
    except Preempted as e:
        print(f"{command}: {e}: {kept}; exiting {EXIT_REQUEUE} to be requeued", file=sys.stderr, flush=True)
        return PREEMPTED
