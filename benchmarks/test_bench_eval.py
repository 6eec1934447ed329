"""Evaluation: feature extraction images/s (`fidelity.extract`, what `dimr evaluate` streams through) and
the time of FID from a full statistics pair (`stats.fid_from_stats`)."""

import numpy as np
import pytest
import torch

from dimr import perf

IMAGES = {"fmnist-net": (32, 1), "inception-v3-compat": (256, 3)}  # the images each extractor sees


def extractor_weights(name: str, tmp_dir) -> tuple[str, str | None]:
    """fmnist-net: a random FashionNet in `dimr fidnet`'s format; Inception: torch-fidelity's weights file."""
    from dimr.io import atomic_torch_save, sha256_file
    from dimr.metrics import extractors, fidnet

    if name == "fmnist-net":
        torch.manual_seed(0)
        net = fidnet.FashionNet()
        path = tmp_dir / fidnet.WEIGHTS_FILE
        atomic_torch_save(path, {"format": fidnet.FORMAT, "arch": net.arch, "state_dict": net.state_dict()})
        return str(path), sha256_file(path)
    path = extractors.default_weights(name)
    if not path.is_file():
        pytest.skip(f"{name} weights not found at {path}; {extractors.get_spec(name).fetch}")
    return str(path), None


@pytest.mark.benchmark(group="evaluate")
def test_feature_extraction(benchmark, bench, extractor_name, eval_batch, tmp_path):
    from dimr.metrics.fidelity import Extractor, extract

    weights, sha = extractor_weights(extractor_name, tmp_path)
    extractor = Extractor(extractor_name, weights, sha, device=bench.device)
    side, channels = IMAGES[extractor_name]
    n = eval_batch * (16 if bench.cuda else 8)
    images = np.random.default_rng(0).integers(0, 256, (n, side, side, channels), dtype=np.uint8)
    extract(extractor, images[:eval_batch], eval_batch)  # warm-up outside the timing

    def run():
        feats = extract(extractor, images, eval_batch)
        perf.synchronize(bench.device)
        return feats

    seconds, feats = bench.pedantic(benchmark, run, warmup_rounds=0)
    assert feats.stats.n == n
    if seconds is None:
        return
    bench.record(benchmark, kind="extract", extractor=extractor_name, batch=eval_batch, images=n,
                 image_size=side, images_per_s=n / seconds, extract_s=seconds,
                 feature_dim=feats.stats.dim)


def random_stats(dim: int, seed: int):
    """mu (D,), sigma (D, D) of a full-rank Gaussian, float64, as a statistics file holds them."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return rng.standard_normal(dim), a @ a.T + 1e-3 * np.eye(dim)


@pytest.mark.benchmark(group="evaluate")
def test_fid_from_stats(benchmark, bench, fid_dim):
    from dimr.metrics.stats import fid_from_stats

    (mu1, s1), (mu2, s2) = random_stats(fid_dim, 1), random_stats(fid_dim, 2)
    fid_from_stats(mu1[:2], s1[:2, :2], mu2[:2], s2[:2, :2])  # imports scipy.linalg outside the timing
    rounds = 1 if fid_dim > 512 else bench.rounds  # sqrtm of 2048×2048 takes tens of seconds on a CPU
    seconds, fid = bench.pedantic(benchmark, lambda: fid_from_stats(mu1, s1, mu2, s2), rounds=rounds,
                                  warmup_rounds=0)
    assert np.isfinite(fid) and fid > 0
    if seconds is None:
        return
    bench.record(benchmark, kind="fid", feature_dim=fid_dim, fid_s=seconds)
