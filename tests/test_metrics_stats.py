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
    conditional_accuracy,
    fidelity_kwargs,
    inception_score,
    isc_chunks,
    isc_splits,
    metrics_from_features,
)
from dimr.metrics.stats import (
    FeatureStats,
    Stats,
    bootstrap_summary,
    fid_bootstrap,
    fid_from_stats,
    load_stats,
    save_stats,
)


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
    assert [isc_splits(n) for n in (100, 5000, 9999, 12000, 50000)] == [1, 1, 2, 3, 10]
    assert isc_chunks(9999) == [(0, 5000), (5000, 9999)]  # a trailing partial chunk of 4,999


def adm_inception_score(logits: np.ndarray, split_size: int = 5000) -> list[float]:
    """ADM evaluator.py compute_inception_score, re-written in NumPy (softmax, then the chunk loop)."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return scores


@pytest.mark.parametrize("n", [9999, 12000])
def test_inception_score_equals_an_independent_numpy_adm_implementation(n):
    logits = np.random.default_rng(n).standard_normal((n, 10)).astype(np.float32) * 3
    ours = inception_score(torch.from_numpy(logits), 5000)
    scores = adm_inception_score(logits)
    assert ours["is_splits"] == len(scores) == (2 if n == 9999 else 3)
    assert ours["is_mean"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert ours["is_std"] == pytest.approx(np.std(scores), rel=1e-5)
    # torch-fidelity's N // splits rule would cut 9,999 into 4,999 + 5,000: another number
    if n == 9999:
        from torch_fidelity.metric_isc import isc_features_to_metric

        other = isc_features_to_metric(torch.from_numpy(logits), 2, False)["inception_score_mean"]
        assert other != pytest.approx(ours["is_mean"], rel=1e-9)


def test_conditional_accuracy_counts_argmax_equal_to_label():
    logits = torch.tensor([[5.0, 0, 0], [0, 2.0, 1.0], [0, 0, 3.0], [1.0, 0, 0]])
    assert conditional_accuracy(logits, np.array([0, 1, 2, 2])) == 0.75
    assert conditional_accuracy(logits.numpy(), [1, 0, 0, 1]) == 0.0
    with pytest.raises(ConfigError, match="4 classified samples but 3 labels"):
        conditional_accuracy(logits, [0, 1, 2])


def test_fid_of_diagonal_gaussians_has_the_closed_form():
    # Diagonal (commuting) covariances a, b: FID = |mu1 - mu2|² + Σ (√a - √b)².
    g = np.random.default_rng(5)
    a, b = g.uniform(0.1, 4, 32), g.uniform(0.1, 4, 32)
    mu1, mu2 = g.standard_normal(32), g.standard_normal(32)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # float32 inputs are computed in float64 (torch-fidelity asserts equal dtypes)
    f32 = fid_from_stats(mu1.astype(np.float32), np.diag(a), mu2, np.diag(b).astype(np.float32))
    assert f32 == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        fid_from_stats(mu1 * np.nan, np.diag(a), mu2, np.diag(b))


def test_fid_equals_scipy_sqrtm_on_full_covariances():
    x, y = gaussian(3000, 16, 0.0, 6), gaussian(3000, 16, 0.2, 7)
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert fid_from_stats(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)


def test_fid_bootstrap_is_seeded_and_spreads_around_the_full_set_fid():
    x, y = gaussian(2000, 8, 0.0, 8), gaussian(5000, 8, 0.3, 9)
    mu, sigma = y.mean(0).astype(np.float64), np.cov(y.astype(np.float64), rowvar=False)
    full = fid_from_stats(x.mean(0), np.cov(x.astype(np.float64), rowvar=False), mu, sigma)
    fids = fid_bootstrap(x, mu, sigma, 50, seed=0)
    assert fids.shape == (50,) and np.array_equal(fids, fid_bootstrap(x, mu, sigma, 50, seed=0))
    assert not np.array_equal(fids, fid_bootstrap(x, mu, sigma, 50, seed=1))
    s = bootstrap_summary(fids)
    assert s["fid_boot_lo"] < full < s["fid_boot_hi"] and 0 < s["fid_boot_std"] < full
    assert s["fid_boot_std"] == pytest.approx(np.std(fids, ddof=1))


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
