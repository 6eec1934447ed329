"""`dimr eval` pre-empted mid-way: finished sample batches stay on disk, the command exits 75, and the rerun
reads them back instead of sampling them again, with the metrics of an uninterrupted run bit for bit."""

import argparse
import json
import os
import signal

import numpy as np
import pytest

from dimr.errors import EXIT_REQUEUE
from dimr.metrics import network_eval
from dimr.sampling import generate
from dimr.sampling.batch_store import STORE_DIR, BatchStore

N, BATCH = 48, 8


@pytest.fixture(scope="module")
def setup(tiny_eval, one_thread_module):
    root, spec = tiny_eval
    return root, json.dumps(spec)


def eval_args(root, spec, out):
    return argparse.Namespace(network_dir=str(root / "net"), spec=spec, overrides=[], out=str(out),
                              snapshot=None, curve=False, batch=BATCH, device="cpu")


def test_preempted_eval_resumes_from_its_finished_batches(setup, monkeypatch, capsys):
    root, spec = setup
    before = signal.getsignal(signal.SIGUSR2)
    assert network_eval.run(eval_args(root, spec, root / "whole")) == 0
    whole = json.loads((root / "whole" / "metrics.json").read_text())
    assert whole["protocol"]["resumed_images"] == 0

    made, real = [], generate.GeneratedImages._make

    def make(self, seeds):
        made.append(int(seeds[0]))
        if len(made) == 4:  # SLURM's pre-emption signal while the 4th batch is being sampled
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, seeds)

    monkeypatch.setattr(generate.GeneratedImages, "_make", make)
    out = root / "interrupted"
    assert network_eval.run(eval_args(root, spec, out)) == EXIT_REQUEUE
    assert "exiting 75 to be requeued" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()
    store = BatchStore(out, root / "net" / "network-final.pt")
    assert store.saved() == 3 * BATCH  # the batch in flight is dropped, the three finished ones kept
    assert signal.getsignal(signal.SIGUSR2) == before  # the command's handler is gone after it

    made.clear()
    assert network_eval.run(eval_args(root, spec, out)) == 0
    assert f"resuming with {3 * BATCH} images" in capsys.readouterr().err
    assert made == list(range(3 * BATCH, N, BATCH))  # only the batches not saved are sampled
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["protocol"]["resumed_images"] == 3 * BATCH
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["protocol"]["samples_sha256"] == whole["protocol"]["samples_sha256"]
    assert not (out / STORE_DIR).exists()  # removed once the metrics are written


def test_batches_of_another_network_file_are_not_reused(setup, tmp_path):
    root, _ = setup
    net = root / "net" / "network-final.pt"
    store = BatchStore(tmp_path, net)
    seeds = np.arange(8, 16)
    store.put(seeds, np.full((8, 16, 16, 1), 7, np.uint8))
    assert store.get(seeds).mean() == 7 and store.get(np.arange(0, 8)) is None
    other = tmp_path / "other.pt"
    other.write_bytes(net.read_bytes() + b"\0")  # a retrained or replaced network
    assert BatchStore(tmp_path, other).get(seeds) is None and BatchStore(tmp_path, other).saved() == 0
