"""The tiny recipe's parts: 16-px Fashion-MNIST, v-MSE weighting, EMA warm-up, snapshots, baselines."""

import json

import numpy as np
import pytest
import torch

from dimr.config import TrainConfig
from dimr.data import build_dataset, fit_resolution
from dimr.diffusion.losses import weight_v_mse
from dimr.diffusion.parametrization import get_prediction
from dimr.diffusion.schedules import alpha_sigma
from dimr.errors import ConfigError
from dimr.metrics.baseline import baseline_images, write_baseline
from dimr.run_config import resolve_run_config, write_run_config
from dimr.training.checkpoint import list_snapshots, load_state
from dimr.training.loop import training_loop
from dimr.training.optim import ema_decay


def test_fit_resolution_is_rounded_area_mean_then_padding():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = fit_resolution(images, 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    # Border of 1 pixel is background; inside, pixel (i, j) is the rounded mean of a 2×2 block.
    assert (out[:, 0] == 0).all() and (out[:, -1] == 0).all() and (out[:, :, 0] == 0).all()
    block = images[1, 4:6, 10:12].astype(float)
    assert out[1, 1 + 2, 1 + 5] == int(np.floor(block.mean() + 0.5))
    assert fit_resolution(images, 32).shape == (3, 32, 32)
    assert (fit_resolution(images, 32)[:, 2:30, 2:30] == images).all()
    for bad in (12, 15, 27):
        with pytest.raises(ConfigError, match="resolution"):
            fit_resolution(images, bad)


def test_dataset_at_16px_matches_the_uint8_images_the_metrics_see():
    ds = build_dataset({"type": "fashion-mnist", "resolution": 16, "hflip": False})
    x, y = ds[7]
    assert x.shape == (1, 16, 16) and -1 <= x.min() and x.max() <= 1
    from dimr.data import load_fashion_mnist

    images, labels = load_fashion_mnist()
    expected = fit_resolution(images[7:8], 16)[0]
    assert torch.equal(((x[0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(expected))
    assert int(y) == labels[7]


def test_v_mse_weighting_makes_the_v_prediction_loss_plain_v_mse():
    lam = torch.linspace(-15, 15, 31, dtype=torch.float64)
    alpha, sigma = alpha_sigma(lam)
    factor = get_prediction("v").eps_space_factor(alpha, sigma)  # v-MSE -> ε-space
    assert torch.allclose(weight_v_mse(lam) * factor, torch.ones_like(lam), rtol=1e-12)


def test_ema_warmup_follows_the_num_updates_rule():
    train = TrainConfig(ema_decay=0.999, ema_warmup=True)
    assert ema_decay(train, 0) == pytest.approx(1 / 10)
    assert ema_decay(train, 90) == pytest.approx(91 / 100)
    assert ema_decay(train, 10**6) == 0.999
    assert ema_decay(TrainConfig(ema_decay=0.999, ema_warmup=False), 0) == 0.999


@pytest.fixture
def tiny_run(tmp_path, one_thread):
    spec = {"preset": "tiny-uvit", "recipe": "tiny-fmnist", "name": "t", "seed": 0,
            "train": {"batch_size": 16, "total_kimg": 0.096, "snapshot_kimg": 0.032, "log_kimg": 0.032,
                      "checkpoint_kimg": 0.048, "warmup_kimg": 0.0},
            "sample": {"num_samples": 20, "snapshot_samples": 10}}
    cfg = write_run_config(tmp_path / "run", resolve_run_config(spec))
    training_loop(tmp_path / "run", cfg, progress=False)
    return tmp_path / "run", cfg


def test_snapshots_are_kept_at_every_interval_and_the_last_equals_the_final_ema(tiny_run):
    run_dir, _ = tiny_run
    snaps = list_snapshots(run_dir)
    assert [load_state(p, what="snapshot")["cur_nimg"] for p in snaps] == [32, 64, 96]
    final = load_state(run_dir / "network-final.pt", what="network")
    last = load_state(snaps[-1], what="snapshot")
    assert all(torch.equal(final["ema"][k], last["ema"][k]) for k in final["ema"])


def test_baselines_have_the_run_resolution_and_labels(tiny_run, tmp_path):
    run_dir, cfg = tiny_run
    images, labels = baseline_images("real-test", cfg, 20)
    assert images.shape == (20, 16, 16, 1) and images.dtype == np.uint8
    from dimr.data import load_fashion_mnist

    assert (labels == load_fashion_mnist(split="test")[1][:20]).all()
    noise, noise_labels = baseline_images("uniform-noise", cfg, 20)
    assert noise.shape == (20, 16, 16, 1) and (noise_labels == np.arange(20) % 10).all()
    assert noise.std() > 60  # uniform on 0..255: sd 73.9
    out = write_baseline(tmp_path / "noise", "uniform-noise", run_dir)
    written = json.loads((out / "config.json").read_text())
    assert written["baseline"] == "uniform-noise" and written["evaluate"] == cfg["evaluate"]
    with np.load(out / "samples.npz") as z:
        assert z["arr_0"].shape == (20, 16, 16, 1)
    with pytest.raises(ConfigError, match="unknown baseline kind"):
        baseline_images("blank", cfg, 20)
