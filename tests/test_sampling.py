"""Sampling: one seed per image, so batch size and process count do not change the sample set."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from dimr.errors import ConfigError, MissingFileError
from dimr.io import atomic_torch_save
from dimr.models import build_model
from dimr.run_config import resolve_run_config, write_run_config
from dimr.sampling import class_label, image_noise
from dimr.training.checkpoint import FINAL_NETWORK

N = 12


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run whose final network is the (untrained, seeded) initial network: enough for determinism."""
    run_dir = tmp_path_factory.mktemp("run")
    spec = {"preset": "tiny-dimr", "sample": {"num_samples": N, "grid": N, "sampler": {"steps": 4}}}
    cfg = write_run_config(run_dir, resolve_run_config(spec))
    torch.manual_seed(0)
    net = build_model(cfg["model"])
    atomic_torch_save(run_dir / FINAL_NETWORK, {"model_config": cfg["model"], "ema": net.state_dict(),
                                                "model": net.state_dict(), "cur_nimg": 0})
    return run_dir


def sample(run_dir, out, *extra, env=None):
    subprocess.run([sys.executable, "-m", "dimr.cli", "sample", str(run_dir), "--out", str(out), *extra],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return np.load(out)


def test_noise_and_label_depend_only_on_the_seed():
    a = image_noise([5, 6, 7], (1, 4, 4))
    b = image_noise([7], (1, 4, 4))
    assert torch.equal(a[2], b[0])
    assert class_label(torch.arange(1000), 10).bincount().tolist() == [100] * 10


def test_sample_set_is_independent_of_batch_size(finished_run, tmp_path):
    a = sample(finished_run, tmp_path / "a.npz", "--batch", "12")
    b = sample(finished_run, tmp_path / "b.npz", "--batch", "5")
    side = json.loads((finished_run / "config.json").read_text())["data"]["resolution"]
    assert a["arr_0"].shape == (N, side, side, 1) and a["arr_0"].dtype == np.uint8
    assert np.array_equal(a["seeds"], np.arange(N))
    assert np.array_equal(a["labels"], np.arange(N) % 10)
    # Bit-equal except where float reductions over a different batch shape flip a rounding.
    diff = np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (finished_run / "grid.png").exists() or (tmp_path / "grid.png").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sample_set_is_independent_of_process_count(finished_run, tmp_path):
    single = sample(finished_run, tmp_path / "single.npz", "--batch", "4")
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-m", "dimr.cli", "sample", str(finished_run),
                                       "--out", str(tmp_path / "multi.npz"), "--batch", "4"], env=env,
                                      stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    multi = np.load(tmp_path / "multi.npz")
    assert np.array_equal(multi["seeds"], single["seeds"])
    diff = np.abs(multi["arr_0"].astype(int) - single["arr_0"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_sampling_an_unfinished_run_names_the_fix(tmp_path):
    from dimr.sampling import load_network

    with pytest.raises(MissingFileError, match="dimr train"):
        load_network(tmp_path)


def test_bf16_sampling_is_a_recorded_setting_close_to_fp32(tiny_eval, one_thread):
    from dimr.run_config import eval_identity, load_run_config, resolve_eval_config
    from dimr.sampling.generate import generate_images, load_network

    root, _ = tiny_eval
    net_cfg = load_run_config(root / "net")
    net = load_network(root / "net")
    seeds = torch.arange(8)
    images = {}
    for precision in ("fp32", "bf16"):
        ev = resolve_eval_config(net_cfg, {"sample": {"precision": precision, "sampler": {"steps": 4}}})
        images[precision] = generate_images(net, {**net_cfg, **ev}, seeds).astype(int)
        images[precision + "-id"] = eval_identity(ev)
    default = resolve_eval_config(net_cfg, {"sample": {"sampler": {"steps": 4}}})
    assert images["fp32-id"] == eval_identity(default) != images["bf16-id"]  # fp32 is the old identity
    diff = abs(images["bf16"] - images["fp32"])
    assert diff.max() > 0 and diff.mean() < 8, (diff.max(), diff.mean())  # bf16 ran, and stays close
    with pytest.raises(ConfigError, match="choose fp32 or bf16"):
        resolve_eval_config(net_cfg, {"sample": {"precision": "fp16"}})
