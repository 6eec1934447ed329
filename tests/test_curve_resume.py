"""The FID-over-training curve pre-empted mid-way (`dimr eval --curve`, `dimr curve`): every snapshot's
finished sample batches stay on disk, the command exits 75, and the rerun samples only the missing ones,
with the curve.json of an uninterrupted run. The evaluation of the same network, which the workflow may
run at the same time in the same folder, keeps its own batches and never removes the curve's."""

import argparse
import json
import shutil

import pytest

from dimr.errors import EXIT_REQUEUE
from dimr.metrics import curve, network_eval
from dimr.sampling.batch_store import STORE_DIR, BatchStore
from dimr.training.checkpoint import FINAL_NETWORK, list_snapshots

N, BATCH = 24, 8  # snapshot_samples: 3 batches per network
PER_NET = N // BATCH


@pytest.fixture(scope="module")
def net_dir(tiny_eval, tmp_path_factory, one_thread_module):
    """A tiny-uvit of 5 steps with snapshots at 16 and 32 images, then the final network at 40 (scored
    from network-final.pt, the file `dimr eval` samples too); its own sections name the tiny_eval
    feature net and statistics."""
    from dimr.run_config import resolve_run_config, write_run_config
    from dimr.training.loop import training_loop

    _, spec = tiny_eval
    sample = {**spec["sample"], "snapshot_samples": N}
    train = {"batch_size": 8, "total_kimg": 0.04, "checkpoint_kimg": 0.04, "warmup_kimg": 0.0,
             "snapshot_kimg": 0.016}
    folder = tmp_path_factory.mktemp("curve") / "net"
    cfg = write_run_config(folder, resolve_run_config({"preset": "tiny-uvit", "recipe": "tiny-fmnist",
                                                       "train": train, "sample": sample,
                                                       "evaluate": spec["evaluate"]}))
    training_loop(folder, cfg, progress=False)
    assert len(list_snapshots(folder)) == 2
    return folder


def eval_args(net, out, curve_mode=True):
    return argparse.Namespace(network_dir=str(net), spec=None, overrides=[], out=str(out), snapshot=None,
                              curve=curve_mode, batch=BATCH, device="cpu")


def networks(net):
    return [*list_snapshots(net), net / FINAL_NETWORK]


def curve_saved(folder, net) -> int:
    return sum(BatchStore(folder, p, tag=curve.STORE_TAG).saved() for p in networks(net))


@pytest.fixture(scope="module")
def whole(net_dir, tmp_path_factory):
    """An uninterrupted `dimr eval --curve`."""
    out = tmp_path_factory.mktemp("whole")
    assert network_eval.run(eval_args(net_dir, out)) == 0
    return json.loads((out / curve.CURVE_FILE).read_text())


def test_preempted_curve_resumes_from_every_snapshots_batches(net_dir, whole, preempt_in_batch, tmp_path,
                                                              capsys):
    assert [p["kimg"] for p in whole["points"]] == [0.016, 0.032, 0.04] and whole["resumed_images"] == 0
    preempt_in_batch(PER_NET + 2)  # the 2nd batch of the 2nd snapshot
    assert network_eval.run(eval_args(net_dir, tmp_path)) == EXIT_REQUEUE
    assert "exiting 75 to be requeued" in capsys.readouterr().err
    assert not (tmp_path / curve.CURVE_FILE).exists()
    assert curve_saved(tmp_path, net_dir) == (PER_NET + 1) * BATCH  # the batch in flight is dropped

    made = preempt_in_batch(None)
    assert network_eval.run(eval_args(net_dir, tmp_path)) == 0
    err = capsys.readouterr().err
    assert f"kimg 0.016: resuming with {N} images" in err
    assert f"kimg 0.032: resuming with {BATCH} images" in err
    assert made == [8, 16, 0, 8, 16]  # the 2nd snapshot's last two batches, then the final network's
    got = json.loads((tmp_path / curve.CURVE_FILE).read_text())
    assert got["points"] == whole["points"] and got["protocol"] == whole["protocol"]
    assert got["resumed_images"] == (PER_NET + 1) * BATCH
    assert not (tmp_path / STORE_DIR).exists()  # every snapshot's store removed once curve.json is written


def test_the_evaluation_and_the_curve_in_one_folder_keep_their_own_batches(net_dir, whole, preempt_in_batch,
                                                                          tmp_path):
    # The workflow's evaluate and curve jobs of one network share its evaluation folder and may run at
    # once; both sample network-final.pt. Each pre-empted, then each resumed: neither reads or removes
    # the other's batches.
    final = BatchStore(tmp_path, net_dir / FINAL_NETWORK)  # the evaluation's store
    preempt_in_batch(2 * PER_NET + 2)  # the final network's 2nd batch
    assert network_eval.run(eval_args(net_dir, tmp_path)) == EXIT_REQUEUE
    preempt_in_batch(3)
    assert network_eval.run(eval_args(net_dir, tmp_path, curve_mode=False)) == EXIT_REQUEUE
    assert curve_saved(tmp_path, net_dir) == (2 * PER_NET + 1) * BATCH and final.saved() == 2 * BATCH

    preempt_in_batch(None)
    assert network_eval.run(eval_args(net_dir, tmp_path)) == 0
    got = json.loads((tmp_path / curve.CURVE_FILE).read_text())
    assert got["resumed_images"] == (2 * PER_NET + 1) * BATCH and got["points"] == whole["points"]
    assert final.saved() == 2 * BATCH  # the curve's clean-up left the evaluation's batches alone

    assert network_eval.run(eval_args(net_dir, tmp_path, curve_mode=False)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["protocol"]["resumed_images"] == 2 * BATCH  # its own batches only
    assert not (tmp_path / STORE_DIR).exists()


def test_preempted_dimr_curve_of_a_run_folder_resumes(net_dir, preempt_in_batch, tmp_path, capsys):
    # `dimr curve RUN_DIR`: the run's own sections, curve.json and the stores in the run folder.
    whole_dir, run_dir = (shutil.copytree(net_dir, tmp_path / name) for name in ("whole", "run"))
    preempt_in_batch(None)
    assert curve.run(argparse.Namespace(run_dir=str(whole_dir), device="cpu")) == 0
    want = json.loads((whole_dir / curve.CURVE_FILE).read_text())

    preempt_in_batch(2)  # batch 250: one batch per network; the 2nd snapshot's is in flight
    assert curve.run(argparse.Namespace(run_dir=str(run_dir), device="cpu")) == EXIT_REQUEUE
    assert "dimr curve: signal SIGUSR2" in capsys.readouterr().err
    made = preempt_in_batch(None)
    assert curve.run(argparse.Namespace(run_dir=str(run_dir), device="cpu")) == 0
    assert made == [0, 0]  # the 2nd snapshot and the final network; the 1st was read back
    got = json.loads((run_dir / curve.CURVE_FILE).read_text())
    assert got["points"] == want["points"] and got["resumed_images"] == N
    assert not (run_dir / STORE_DIR).exists()
