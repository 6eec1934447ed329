"""`dimr fidnet` and `dimr reference` pre-empted: they keep no progress (minutes at most at the tiny scale,
docs/ARCHITECTURE.md), exit 75 with nothing half-written, and the requeued command writes what an
uninterrupted one does."""

import argparse
import json
import os
import signal

import numpy as np
import pytest

from dimr.errors import EXIT_REQUEUE
from dimr.io import stale_temp_files
from dimr.metrics import fidelity, fidnet, reference

FIDNET = dict(epochs=2, seed=0, num_train=512, num_test=100, data_root=None, device="cpu", resolution=16,
              upsample=1)  # 2 steps per epoch


def fidnet_args(out, **over):
    return argparse.Namespace(out_dir=str(out), **{**FIDNET, **over})


def signal_on_call(monkeypatch, owner, name, k, after=False):
    """SIGUSR2 on the k-th call of owner.name (before it runs, or after it returned)."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == k and not after:
            os.kill(os.getpid(), signal.SIGUSR2)
        out = real(*args, **kwargs)
        if len(calls) == k and after:
            os.kill(os.getpid(), signal.SIGUSR2)
        return out

    monkeypatch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def whole_fidnet(tmp_path_factory, one_thread_module):
    out = tmp_path_factory.mktemp("fidnet")
    assert fidnet.run(fidnet_args(out)) == 0
    return out


def test_preempted_fidnet_writes_nothing_and_its_rerun_trains_the_same_net(whole_fidnet, tmp_path,
                                                                           monkeypatch, capsys):
    before = signal.getsignal(signal.SIGUSR2)
    with monkeypatch.context() as m:
        signal_on_call(m, fidnet.FashionNet, "forward", 3)  # epoch 2, its first step
        assert fidnet.run(fidnet_args(tmp_path)) == EXIT_REQUEUE
    assert "dimr fidnet: signal SIGUSR2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()) and signal.getsignal(signal.SIGUSR2) == before
    assert fidnet.run(fidnet_args(tmp_path)) == 0
    for name in (fidnet.WEIGHTS_FILE, fidnet.INFO_FILE):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / fidnet.WEIGHTS_FILE).read_bytes() == (whole_fidnet / fidnet.WEIGHTS_FILE).read_bytes()


def test_fidnet_stopped_between_its_two_files_leaves_no_record_of_other_weights(whole_fidnet, tmp_path,
                                                                                monkeypatch):
    # An earlier net's record in the folder; the new net's weights written, the signal before its record.
    for name in (fidnet.WEIGHTS_FILE, fidnet.INFO_FILE):
        (tmp_path / name).write_bytes((whole_fidnet / name).read_bytes())
    with monkeypatch.context() as m:
        signal_on_call(m, fidnet, "atomic_torch_save", 1, after=True)
        assert fidnet.run(fidnet_args(tmp_path, seed=1)) == EXIT_REQUEUE
    weights = tmp_path / fidnet.WEIGHTS_FILE
    assert weights.read_bytes() != (whole_fidnet / fidnet.WEIGHTS_FILE).read_bytes()  # the seed-1 net
    assert fidnet.recorded_sha256(weights) is None and stale_temp_files(tmp_path) == []
    assert fidnet.run(fidnet_args(tmp_path, seed=1)) == 0
    assert json.loads((tmp_path / fidnet.INFO_FILE).read_text())["seed"] == 1


def reference_args(weights, out):
    return argparse.Namespace(out=str(out), data="fashion-mnist", split="train", data_root=None,
                              resolution=16, upsample=1, num=200, num_pr=50, extractor="fmnist-net",
                              extractor_weights=str(weights), extractor_sha256=None, batch_size=64,
                              device="cpu")


def test_preempted_reference_writes_nothing_and_its_rerun_equals_an_uninterrupted_one(whole_fidnet, tmp_path,
                                                                                      monkeypatch, capsys):
    weights = whole_fidnet / fidnet.WEIGHTS_FILE
    assert reference.run(reference_args(weights, tmp_path / "whole.npz")) == 0
    real, seen = fidelity.image_batches, []

    def batches(*args, **kwargs):  # the signal while the 3rd of 4 batches is extracted
        for images in real(*args, **kwargs):
            seen.append(len(images))
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGUSR2)
            yield images

    out = tmp_path / "run" / "ref.npz"
    out.parent.mkdir()
    with monkeypatch.context() as m:
        m.setattr(fidelity, "image_batches", batches)
        assert reference.run(reference_args(weights, out)) == EXIT_REQUEUE
    assert "dimr reference: signal SIGUSR2" in capsys.readouterr().err and seen == [64, 64, 64]
    assert not list(out.parent.iterdir())
    assert reference.run(reference_args(weights, out)) == 0
    got, want = np.load(out), np.load(tmp_path / "whole.npz")
    for key in ("mu", "sigma", "n", "features"):
        assert np.array_equal(got[key], want[key]), key
