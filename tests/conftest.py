"""Shared pytest fixtures. `slurm_cluster` (a real single-node SLURM cluster): see tests/slurm_cluster.py."""

import contextlib
import os
import signal

import pytest
import torch
from slurm_cluster import slurm_cluster  # noqa: F401  (re-exported as a fixture)


@contextlib.contextmanager
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls when the 2 cores are shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_eval(tmp_path_factory):
    """(root, spec): root/net a tiny-uvit trained for 2 steps; spec the sample and evaluate sections of a
    small `dimr eval` of it with a 16-px fmnist-net (1 epoch) and its statistics of 200 training images."""
    from dimr.metrics import fidnet
    from dimr.metrics.fidelity import Extractor
    from dimr.metrics.reference import make_reference, reference_images
    from dimr.run_config import resolve_run_config, write_run_config
    from dimr.training.loop import training_loop

    root = tmp_path_factory.mktemp("tiny-eval")
    train = {"batch_size": 8, "total_kimg": 0.016, "checkpoint_kimg": 0.016, "warmup_kimg": 0.0}
    weights = root / "fidnet" / fidnet.WEIGHTS_FILE
    with single_thread():
        cfg = write_run_config(root / "net", resolve_run_config(
            {"preset": "tiny-uvit", "recipe": "tiny-fmnist", "train": train}))
        training_loop(root / "net", cfg, progress=False)
        fidnet.train_fidnet(root / "fidnet", epochs=1, seed=0, num_train=512, num_test=100, resolution=16,
                            log=lambda *_: None)
        src, meta = reference_images("fashion-mnist", "train", num=200, resolution=16)
        make_reference(root / "ref.npz", Extractor("fmnist-net", weights, device="cpu"), src, meta, num_pr=0)
    spec = {"sample": {"num_samples": 48, "grid": 4, "sampler": {"steps": 3}},
            "evaluate": {"extractor_weights": str(weights), "reference": str(root / "ref.npz"),
                         "metrics": ["fid", "is"], "fid_bootstrap": 0, "clean_fid": False}}
    return root, spec


@pytest.fixture
def preempt_in_batch(monkeypatch):
    """`arm(k)`: SLURM's pre-emption signal (SIGUSR2) while the k-th sample batch from now on is being made
    (None: never); returns the list of the first seeds of the batches made from now on."""
    from dimr.sampling import generate

    made, at, real = [], [None], generate.GeneratedImages._make

    def make(self, seeds):
        made.append(int(seeds[0]))
        if len(made) == at[0]:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, seeds)

    def arm(k):
        made.clear()
        at[0] = k
        return made

    monkeypatch.setattr(generate.GeneratedImages, "_make", make)
    return arm
