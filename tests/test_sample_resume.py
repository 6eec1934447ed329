"""`dimr sample` pre-empted mid-way: finished batches stay beside the output, the command exits 75, and the
rerun samples only the missing ones; samples.npz holds the images of an uninterrupted run, byte for byte."""

import argparse

import numpy as np
import pytest

from dimr.errors import EXIT_REQUEUE
from dimr.run_config import load_run_config
from dimr.sampling import command
from dimr.sampling.batch_store import STORE_DIR

N, BATCH = 48, 8
SET = [f"sample.num_samples={N}", "sample.sampler.steps=3", "sample.grid=4"]


@pytest.fixture
def net(tiny_eval, one_thread, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process
    return tiny_eval[0] / "net"


def sample_args(net, out, overrides=SET):
    return argparse.Namespace(run_dir=str(net), overrides=list(overrides), out=str(out), batch=BATCH,
                              device="cpu", png_dir=None)


def test_preempted_sample_resumes_from_its_finished_batches(net, preempt_in_batch, tmp_path, capsys):
    whole, resumed = tmp_path / "whole" / "samples.npz", tmp_path / "resumed" / "samples.npz"
    preempt_in_batch(None)
    assert command.run(sample_args(net, whole)) == 0
    assert not (whole.parent / STORE_DIR).exists()

    preempt_in_batch(4)  # SLURM's pre-emption signal while the 4th batch is being sampled
    assert command.run(sample_args(net, resumed)) == EXIT_REQUEUE
    assert "exiting 75 to be requeued" in capsys.readouterr().err
    assert not resumed.exists()
    cfg = command.sample_config(load_run_config(net), SET)
    assert command.batch_store(net, cfg, resumed, 0, 1).saved() == 3 * BATCH  # the batch in flight dropped

    made = preempt_in_batch(None)
    assert command.run(sample_args(net, resumed)) == 0
    assert f"rank 0: resuming with {3 * BATCH} images" in capsys.readouterr().err
    assert made == list(range(3 * BATCH, N, BATCH))  # only the batches not saved are sampled
    got, want = np.load(resumed), np.load(whole)
    assert got["arr_0"].tobytes() == want["arr_0"].tobytes() and got["arr_0"].shape == want["arr_0"].shape
    assert (got["seeds"] == want["seeds"]).all() and (got["labels"] == want["labels"]).all()
    assert not (resumed.parent / STORE_DIR).exists()  # removed once samples.npz is written


def test_another_sample_section_or_output_never_reads_the_saved_batches(net, preempt_in_batch, tmp_path):
    out = tmp_path / "samples.npz"
    preempt_in_batch(3)
    assert command.run(sample_args(net, out)) == EXIT_REQUEUE
    made = preempt_in_batch(None)
    other = [*SET[:1], "sample.sampler.steps=4", *SET[2:]]  # other images of the same seeds
    assert command.run(sample_args(net, out, other)) == 0
    assert made == list(range(0, N, BATCH))  # all sampled: the steps=3 batches are not those images
    made.clear()
    assert command.run(sample_args(net, tmp_path / "other.npz")) == 0
    assert made == list(range(0, N, BATCH))  # another output has its own store
    cfg = command.sample_config(load_run_config(net), SET)
    assert command.batch_store(net, cfg, out, 0, 1).saved() == 2 * BATCH  # still there for its own rerun
