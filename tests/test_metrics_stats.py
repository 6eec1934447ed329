"""Streamed statistics, FID from statistics files, IS on a known case, torch-fidelity kwarg checks."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import linalg

from dimr.errors import ConfigError, MissingFileError
from dimr.io import atomic_savez, sha256_file
from dimr.metrics.fidelity import (
    Features,
    ImageArrayDataset,
    NpzImages,
    fidelity_kwargs,
    isc_splits,
    metrics_from_features,
)
from dimr.metrics.stats import FeatureStats, Stats, fid_from_stats, load_stats, save_stats


def gaussian(n, d, shift, seed):
    g = np.random.default_rng(seed)
    return (g.standard_normal((n, d)) @ g.standard_normal((d, d)) * 0.3 + shift).astype(np.float32)


def test_streamed_stats_equal_numpy_mean_and_cov():
    x = gaussian(1000, 16, 5.0, 0)
    s = FeatureStats(16, max_keep=300)
    for i in range(0, 1000, 96):  # uneven batches
        s.update(torch.from_numpy(x[i:i + 96]))
    mu, sigma = s.mu_sigma()
    assert mu.dtype == sigma.dtype == np.float64 and s.n == 1000
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(s.features(), x[:300])


def test_fid_from_stats_matches_closed_form_and_is_zero_on_itself():
    d = 8
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.diag(np.arange(1.0, d + 1)), np.diag(np.full(d, 2.0))
    # Commuting (diagonal) covariances: tr sqrt(S1 S2) = Σ sqrt(a_i b_i).
    expected = d * 0.25 + s1.trace() + s2.trace() - 2 * np.sqrt(np.diag(s1) * 2.0).sum()
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    x = gaussian(500, d, 0.0, 1)
    mu, sig = x.mean(0), np.cov(x, rowvar=False)
    assert abs(fid_from_stats(mu, sig, mu, sig)) < 1e-8
    with pytest.raises(ConfigError, match="same feature extractor"):
        fid_from_stats(mu, sig, mu[:4], sig[:4, :4])


def test_stats_file_round_trip_and_fid_is_a_function_of_two_files(tmp_path):
    a, b = gaussian(400, 8, 0.0, 2), gaussian(400, 8, 0.3, 3)
    paths = []
    for name, x in (("a", a), ("b", b)):
        s = FeatureStats(8, max_keep=50)
        s.update(torch.from_numpy(x))
        paths.append(save_stats(tmp_path / f"{name}.npz", s, {"extractor": "test", "source": name}))
    ra, rb = (load_stats(p) for p in paths)
    assert ra.kind == "dimr" and ra.n == 400 and ra.meta["source"] == "a" and ra.features.shape == (50, 8)
    assert ra.sha256 == sha256_file(paths[0])
    # Independent computation straight from the features with scipy.
    m1, s1 = a.astype(np.float64).mean(0), np.cov(a.astype(np.float64), rowvar=False)
    m2, s2 = b.astype(np.float64).mean(0), np.cov(b.astype(np.float64), rowvar=False)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid_from_stats(ra.mu, ra.sigma, rb.mu, rb.sigma) == pytest.approx(ref, rel=1e-6)


def test_adm_reference_batch_is_cast_to_float64(tmp_path):
    path = tmp_path / "VIRTUAL_tiny_labeled.npz"
    atomic_savez(path, mu=np.zeros(4, np.float32), sigma=np.eye(4, dtype=np.float32),
                 arr_0=np.zeros((3, 8, 8, 3), np.uint8))
    ref = load_stats(path)
    assert ref.kind == "adm" and ref.mu.dtype == np.float64 and ref.sigma.dtype == np.float64
    assert len(NpzImages(path)) == 3


def test_reference_file_missing_or_with_wrong_hash_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="nope.npz.*dimr reference"):
        load_stats(tmp_path / "nope.npz")
    path = tmp_path / "ref.npz"
    atomic_savez(path, mu=np.zeros(2), sigma=np.eye(2))
    with pytest.raises(MissingFileError, match="ref.npz: sha256 .* differs"):
        load_stats(path, sha256="0" * 64)


def test_npz_images_stream_in_batches_equal_the_array(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    atomic_savez(tmp_path / "s.npz", arr_0=x)
    got = list(NpzImages(tmp_path / "s.npz").batches(10, limit=33))
    assert [len(b) for b in got] == [10, 10, 10, 3]
    np.testing.assert_array_equal(np.concatenate(got), x[:33])


def test_inception_score_of_confident_uniform_logits_is_k():
    # Each sample is (almost) one-hot, classes used equally: IS = exp(H(y)) = k (Salimans et al. 2016).
    k, n = 7, 7 * 300
    logits = torch.full((n, k), -30.0)
    logits[torch.arange(n), torch.arange(n) % k] = 30.0
    feats = Features(FeatureStats(1), logits)
    out = metrics_from_features(feats, Stats(np.zeros(1), np.eye(1)), metrics=("is",), split_size=700)
    assert out["is_splits"] == 3 and out["is_mean"] == pytest.approx(k, rel=1e-6) and out["is_std"] < 1e-6
    # One class only: IS = 1.
    logits[:, 0] = 60.0
    assert metrics_from_features(feats, None, metrics=("is",))["is_mean"] == pytest.approx(1.0, abs=1e-6)


def test_is_splits_follow_adm_chunks_of_5000():
    assert [isc_splits(n) for n in (100, 5000, 9999, 50000)] == [1, 1, 1, 10]


def test_torch_fidelity_kwargs_are_validated():
    kw = fidelity_kwargs(isc=True)
    assert kw["samples_shuffle"] is False and kw["cache"] is False and kw["isc"] is True
    with pytest.raises(ConfigError, match=r"unknown torch-fidelity option\(s\) \['isc_split'\]"):
        fidelity_kwargs(isc_split=10)  # a typo torch-fidelity would silently ignore
    with pytest.raises(ConfigError, match="cache"):
        fidelity_kwargs(cache=True)


def test_image_dataset_gives_uint8_chw_and_rgb_for_inception():
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    item = ImageArrayDataset(x, channels=3)[1]
    assert item.dtype == torch.uint8 and item.shape == (3, 4, 4) and torch.equal(item[2], item[0])
    with pytest.raises(ConfigError, match="uint8"):
        ImageArrayDataset(x.astype(np.float32))


def test_meta_is_plain_json_without_pickle(tmp_path):
    s = FeatureStats(2)
    s.update(torch.randn(5, 2))
    save_stats(tmp_path / "s.npz", s, {"k": [1, 2]})
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert json.loads(str(z["meta"])) == {"k": [1, 2]} and not math.isnan(float(z["mu"][0]))
