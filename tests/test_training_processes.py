"""Training does not depend on the process count or the micro-batch split (`train.draws: sample`).

Every draw of an image (its noise level, its noise, its label dropout, its flip) is keyed by its place
in the data stream, so 1 process, 2 gloo processes and 1 process in 4 micro-batches train the same
run. What may differ is float32 summation order: DDP averages the two halves' gradients where one
process averages the whole batch, so weights agree to float32 rounding carried through a few Adam
steps, not bit for bit (measured: max |Δw| 3.3e-6 for both; the bound below is 1e-5).
"""

import os
import shutil
import socket
import subprocess
import sys

import torch

from dimr.run_config import resolve_run_config, write_run_config
from dimr.training.checkpoint import FINAL_NETWORK

TOLERANCE = 1e-5


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def new_run(run_dir, draws):
    # 6 steps of 8 images; label dropout 0.5 and flips on, so every kind of draw happens.
    spec = {"preset": "tiny-dimr", "seed": 5, "data": {"hflip": True},
            "train": {"batch_size": 8, "total_kimg": 0.048, "warmup_kimg": 0.0, "checkpoint_kimg": 1.0,
                      "label_dropout": 0.5, "draws": draws}}
    write_run_config(run_dir, resolve_run_config(spec))
    return run_dir


def train(run_dir, world=1, *extra):
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "dimr.cli", "train", str(run_dir), *extra],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    return torch.load(run_dir / FINAL_NETWORK, map_location="cpu", weights_only=True)


def max_weight_difference(a, b) -> float:
    return max((a[part][k] - b[part][k]).abs().max().item() for part in ("model", "ema") for k in a[part])


def copy_run(src, dst):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


def test_one_process_two_processes_and_micro_batches_train_the_same_run(tmp_path):
    one = new_run(tmp_path / "one", "sample")
    two = copy_run(one, tmp_path / "two")
    micro = copy_run(one, tmp_path / "micro")
    a = train(one)
    b = train(two, 2)
    c = train(micro, 1, "--batch-gpu", "2")
    assert a["cur_nimg"] == b["cur_nimg"] == c["cur_nimg"] == 48
    assert max_weight_difference(a, b) <= TOLERANCE
    assert max_weight_difference(a, c) <= TOLERANCE
    # Training moved the weights (the network and its EMA, both initialised alike, now differ), so the
    # equalities above are not those of three untrained copies.
    assert max_weight_difference(a, {"model": a["ema"], "ema": a["ema"]}) > 10 * TOLERANCE


def test_rank_keyed_draws_change_with_the_micro_batch_split(tmp_path):
    """The first versions' keying (seed, step, rank, micro-batch): the control that shows the test above
    can fail."""
    one = new_run(tmp_path / "one", "rank")
    micro = copy_run(one, tmp_path / "micro")
    assert max_weight_difference(train(one), train(micro, 1, "--batch-gpu", "2")) > 10 * TOLERANCE
