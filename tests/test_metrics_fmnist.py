"""The Fashion-MNIST feature network and the metrics it gives (FID sanity, cross-checks, metrics.json).

One short deterministic training (6,000 train images, 1 epoch, ~10 s) is shared by the module.
"""

import argparse
import json

import numpy as np
import pytest
import torch
from scipy import linalg

from dimr.data.fashion_mnist import load_fashion_mnist
from dimr.errors import ConfigError, MissingFileError
from dimr.io import atomic_savez, atomic_write_json
from dimr.metrics import fidnet
from dimr.metrics import reference as reference_cmd
from dimr.metrics.clean_fid_check import clean_fid
from dimr.metrics.evaluate import EvaluateConfig, evaluate_run
from dimr.metrics.fidelity import (
    Extractor,
    calculate_metrics_checked,
    extract,
    metrics_from_features,
)
from dimr.metrics.reference import make_reference, reference_images
from dimr.metrics.stats import Stats, fid_from_stats, load_stats

N = 10_000  # images per side in the FID sanity test


@pytest.fixture(scope="module")
def net_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidnet")
    fidnet.train_fidnet(out, epochs=1, seed=0, num_train=6000, num_test=2000, batch_size=128,
                        log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def extractor(net_dir):
    return Extractor("fmnist-net", net_dir / fidnet.WEIGHTS_FILE, device="cpu")


@pytest.fixture(scope="module")
def images():
    train = fidnet.pad_to_resolution(load_fashion_mnist(split="train")[0][:N])
    test = fidnet.pad_to_resolution(load_fashion_mnist(split="test")[0][:N])
    noise = np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8)
    return {"train": train, "test": test, "noise": noise}


@pytest.fixture(scope="module")
def feats(extractor, images):
    return {k: extract(extractor, v, batch_size=500, keep=N) for k, v in images.items()}


def test_fidnet_json_records_accuracy_hash_and_settings(net_dir):
    info = json.loads((net_dir / fidnet.INFO_FILE).read_text())
    assert info["test_accuracy"] > 0.7  # 1 short epoch (~0.8); the full `dimr fidnet` run reaches ~0.9
    assert info["sha256"] == fidnet.recorded_sha256(net_dir / fidnet.WEIGHTS_FILE)
    assert {"epochs", "seed", "feature_dim", "train_seconds", "num_train"} <= set(info)
    assert info["feature_dim"] == 128 and info["num_train"] == 6000


def test_fidnet_training_is_deterministic(tmp_path):
    kw = dict(epochs=1, num_train=512, num_test=500, log=lambda *_: None)
    a = fidnet.train_fidnet(tmp_path / "a", seed=3, **kw)
    b = fidnet.train_fidnet(tmp_path / "b", seed=3, **kw)
    c = fidnet.train_fidnet(tmp_path / "c", seed=4, **kw)
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is restored


def test_fid_is_small_between_splits_and_large_against_noise(feats):
    ref = Stats(*feats["train"].stats.mu_sigma())
    fid_test = metrics_from_features(feats["test"], ref, ("fid",))["fid"]
    fid_noise = metrics_from_features(feats["noise"], ref, ("fid",))["fid"]
    print(f"FID(train 10k, test 10k) = {fid_test:.4f}; FID(train 10k, noise) = {fid_noise:.2f}")
    assert fid_noise > 20  # ~100 with this short training, ~1300 with the full `dimr fidnet` net
    assert fid_test < 0.02 * fid_noise  # threshold: 2% of the noise FID (observed ~0.05%)


def test_our_fid_equals_an_independent_scipy_computation(feats):
    a = feats["train"].stats.features().astype(np.float64)  # all 10k kept
    b = feats["test"].stats.features().astype(np.float64)
    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    independent = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    ours = fid_from_stats(*feats["test"].stats.mu_sigma(), *feats["train"].stats.mu_sigma())
    np.testing.assert_allclose(ours, independent, rtol=1e-6)


def test_streamed_path_agrees_with_torch_fidelity_calculate_metrics(extractor, images):
    gen, real = images["test"][:2000], images["train"][:2000]
    tf = calculate_metrics_checked(gen, real, extractor)
    fg, fr = extract(extractor, gen, keep=2000), extract(extractor, real, keep=2000)
    ours = metrics_from_features(fg, Stats(*fr.stats.mu_sigma()), ref_pr=fr.stats.features())
    # torch-fidelity: float32 mu and an eigenvalue trace; ours: float64 and sqrtm.
    assert ours["fid"] == pytest.approx(tf["frechet_inception_distance"], rel=1e-4)
    assert ours["is_mean"] == pytest.approx(tf["inception_score_mean"], rel=1e-6)
    assert (ours["precision"], ours["recall"]) == (tf["precision"], tf["recall"])


def test_clean_fid_with_the_same_extractor_agrees_with_ours(extractor, images):
    gen, real = images["test"][:2000], images["train"][:2000]
    theirs = clean_fid(gen, real, extractor)
    stats = [extract(extractor, x).stats.mu_sigma() for x in (gen, real)]
    ours = fid_from_stats(*stats[0], *stats[1])
    print(f"clean-fid {theirs:.6f} vs ours {ours:.6f}")
    assert theirs == pytest.approx(ours, rel=1e-4)  # float32 mean in clean-fid; observed ~3e-6


def test_extractor_is_registered_once_with_torch_fidelity(extractor):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fidnet.register()  # a second registration is a no-op, not torch-fidelity's ValueError
    assert FEATURE_EXTRACTORS_REGISTRY[fidnet.FIDELITY_NAME] is fidnet.FeatureExtractorFashionNet
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)  # RGB input of a grey image
    f3 = extractor.module(x)
    f1 = extractor.module(x[:, :1])
    assert torch.equal(f3[0], f1[0]) and f3[0].shape == (2, 128)


def test_missing_or_altered_weights_are_errors(net_dir, tmp_path):
    with pytest.raises(MissingFileError, match=r"absent\.pt.*dimr fidnet"):
        Extractor("fmnist-net", tmp_path / "absent.pt", sha256="0" * 64)
    with pytest.raises(MissingFileError, match="sha256 .* expected 0000"):
        Extractor("fmnist-net", net_dir / fidnet.WEIGHTS_FILE, sha256="0" * 64)


def test_reference_command_writes_stats_with_provenance(net_dir, tmp_path):
    args = argparse.Namespace(out=str(tmp_path / "ref.npz"), data="fashion-mnist", split="test",
                              data_root=None, num=500, num_pr=100, extractor="fmnist-net",
                              extractor_weights=str(net_dir / fidnet.WEIGHTS_FILE), extractor_sha256=None,
                              resolution=32, upsample=1, batch_size=250, device="cpu")
    assert reference_cmd.run(args) == 0
    ref = load_stats(tmp_path / "ref.npz")
    assert ref.n == 500 and ref.features.shape == (100, 128) and ref.mu.dtype == np.float64
    assert ref.meta["extractor"] == "fmnist-net" and ref.meta["source"]["split"] == "test"
    assert ref.meta["extractor_weights_sha256"] == fidnet.recorded_sha256(net_dir / fidnet.WEIGHTS_FILE)
    assert len(ref.meta["content_sha256"]) == 64


def make_run(run_dir, images, weights, reference, config_extra=None, evaluate_extra=None, labels="cycle"):
    run_dir.mkdir()
    n = len(images)
    arrays = {"arr_0": images, "seeds": np.arange(100, 100 + n)}
    if labels is not None:
        arrays["labels"] = np.arange(n) % 10 if isinstance(labels, str) else labels
    atomic_savez(run_dir / "samples.npz", **arrays)
    cfg = {"evaluate": {"extractor": "fmnist-net", "extractor_weights": str(weights),
                        "reference": str(reference), "num_pr": 100, **(evaluate_extra or {})}}
    cfg.update(config_extra or {})
    atomic_write_json(run_dir / "config.json", cfg)
    return run_dir


def test_evaluate_writes_metrics_json_with_every_protocol_field(extractor, net_dir, images, tmp_path):
    src, meta = reference_images("fashion-mnist", "train", num=1000)
    make_reference(tmp_path / "ref.npz", extractor, src, meta, num_pr=200)
    config = {"seed": 0, "data": {"type": "fashion-mnist"},
              "sample": {"num_samples": 300, "seed_start": 100,
                         "sampler": {"sampler": "dpmpp-2m", "steps": 20, "guidance": {"scale": 0.5}}},
              "provenance": {"git_commit": "abc123", "config_sha256": "f" * 64}}
    labels = load_fashion_mnist(split="test")[1][:300]  # the true classes: accuracy = the net's accuracy
    run = make_run(tmp_path / "run", images["test"][:300], net_dir / fidnet.WEIGHTS_FILE,
                   tmp_path / "ref.npz", config,
                   {"clean_fid": True, "clean_fid_num": 150, "fid_bootstrap": 20},
                   labels=labels)
    result = evaluate_run(run, device="cpu")
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(result))
    m, p = result["metrics"], result["protocol"]
    assert set(m) == {"fid", "is_mean", "is_std", "precision", "recall", "accuracy", "fid_boot_std",
                      "fid_boot_lo", "fid_boot_hi", "clean_fid", "clean_fid_rel_diff"}
    assert all(isinstance(v, float) for v in m.values()) and m["fid"] < 20 and m["is_mean"] > 1  # noise: ~500
    assert m["accuracy"] > 0.6  # the 1-epoch net's test accuracy (~0.8)
    assert m["fid_boot_lo"] < m["fid_boot_hi"] and m["fid_boot_std"] > 0 and p["fid_bootstrap"] == 20
    required = ["extractor", "extractor_weights_sha256", "num_samples", "seed_range", "sampler", "steps",
                "guidance", "reference", "reference_sha256", "git_commit", "torch_fidelity_version",
                "clean_fid_version", "meaningful"]
    assert all(p.get(k) is not None for k in required), {k: p.get(k) for k in required}
    assert p["seed_range"] == [100, 399] and p["num_samples"] == 300 and p["steps"] == 20
    assert p["sampler"] == "dpmpp-2m" and p["guidance"] == {"scale": 0.5} and p["meaningful"] is True
    assert p["torch_fidelity_version"] == "0.4.0" and p["clean_fid_version"] == "0.1.35"
    assert p["run_git_commit"] == "abc123" and p["is_splits"] == 1 and p["is_split_size"] == 5000
    # prc_reference "all": every kept one
    assert p["prc_num_samples"] == 100 and p["prc_num_reference"] == 200
    assert p["clean_fid"]["fid_ours_same_images"] == pytest.approx(m["clean_fid"], rel=1e-3)
    assert p["clean_fid"]["clean_fid_agrees"] is True and p["clean_fid"]["rtol"] == 0.01
    assert p["clean_fid"]["clean_fid_rel_diff"] == m["clean_fid_rel_diff"] < 1e-3


def test_evaluate_prc_sizes_all_equal_and_short_reference(extractor, net_dir, images, tmp_path):
    src, meta = reference_images("fashion-mnist", "train", num=400)
    make_reference(tmp_path / "ref.npz", extractor, src, meta, num_pr=150)
    weights, ref = net_dir / fidnet.WEIGHTS_FILE, tmp_path / "ref.npz"
    run = make_run(tmp_path / "run", images["test"][:120], weights, ref,
                   evaluate_extra={"metrics": ["prc"], "num_pr": None, "prc_reference": "equal"})
    p = evaluate_run(run, device="cpu")["protocol"]
    assert (p["prc_num_samples"], p["prc_num_reference"], p["prc_reference"]) == (120, 120, "equal")
    p = evaluate_run(run, {"num_pr": 50, "prc_reference": "all"}, device="cpu")["protocol"]
    assert (p["prc_num_samples"], p["prc_num_reference"]) == (50, 150)
    run2 = make_run(tmp_path / "run2", images["test"][:200], weights, ref,
                    evaluate_extra={"metrics": ["prc"], "num_pr": None, "prc_reference": "equal"})
    p = evaluate_run(run2, device="cpu")["protocol"]  # only 150 reference features kept: all of them used
    assert (p["prc_num_samples"], p["prc_num_reference"], p["prc_num_reference_requested"]) == (200, 150, 200)


def test_clean_fid_check_runs_at_16x16(tmp_path):
    fidnet.train_fidnet(tmp_path / "net16", epochs=1, seed=0, num_train=512, num_test=200, resolution=16,
                        log=lambda *_: None)
    net16 = Extractor("fmnist-net", tmp_path / "net16" / fidnet.WEIGHTS_FILE, device="cpu")
    gen = fidnet.pad_to_resolution(load_fashion_mnist(split="test")[0][:300], 16)
    real = fidnet.pad_to_resolution(load_fashion_mnist(split="train")[0][:300], 16)
    assert gen.shape == (300, 16, 16, 1)
    theirs = clean_fid(gen, real, net16)
    stats = [extract(net16, x).stats.mu_sigma() for x in (gen, real)]
    assert theirs == pytest.approx(fid_from_stats(*stats[0], *stats[1]), rel=1e-3)


def test_evaluate_handles_missing_optional_sections(extractor, net_dir, images, tmp_path):
    src, meta = reference_images("fashion-mnist", "train", num=300)
    make_reference(tmp_path / "ref.npz", extractor, src, meta, num_pr=0)
    run = make_run(tmp_path / "run", images["test"][:50], net_dir / fidnet.WEIGHTS_FILE, tmp_path / "ref.npz",
                   evaluate_extra={"metrics": ["fid", "is"]})
    result = evaluate_run(run, device="cpu")
    assert result["metrics"]["precision"] is None and result["metrics"]["fid"] > 0
    assert result["metrics"]["fid_boot_std"] is None and result["protocol"]["fid_bootstrap"] == 0
    assert result["metrics"]["accuracy"] is not None and result["protocol"]["prc_num_samples"] is None
    run = make_run(tmp_path / "unlabelled", images["test"][:50], net_dir / fidnet.WEIGHTS_FILE,
                   tmp_path / "ref.npz", evaluate_extra={"metrics": ["fid"]}, labels=None)
    assert evaluate_run(run, device="cpu")["metrics"]["accuracy"] is None
    assert result["protocol"]["sampler"] is None and result["protocol"]["seed_range"] == [100, 149]


def test_evaluate_checks_every_input_before_computing(net_dir, images, tmp_path, monkeypatch):
    from dimr.metrics import evaluate

    def boom(*a, **k):
        raise AssertionError("computed before the inputs were checked")

    monkeypatch.setattr(evaluate, "extract", boom)  # where evaluate_run looks them up
    monkeypatch.setattr(evaluate, "Extractor", boom)
    weights = net_dir / fidnet.WEIGHTS_FILE
    run = make_run(tmp_path / "r1", images["test"][:20], weights, tmp_path / "missing-ref.npz")
    with pytest.raises(MissingFileError, match="missing-ref.npz"):
        evaluate_run(run)
    run = make_run(tmp_path / "r2", images["test"][:20], weights, tmp_path / "missing-ref.npz",
                   evaluate_extra={"extractor_sha256": "0" * 64})
    with pytest.raises(MissingFileError, match="fidnet.pt has sha256"):
        evaluate_run(run)
    assert not (tmp_path / "r1" / "metrics.json").exists()


def test_evaluate_config_rejects_unknown_keys_and_values():
    with pytest.raises(ConfigError, match="unknown key.*refrence"):
        EvaluateConfig.from_dict({"refrence": "x.npz"})
    with pytest.raises(ConfigError, match="choose from"):
        EvaluateConfig.from_dict({"metrics": ["kid"]})
    assert EvaluateConfig.from_dict({}).metrics == ["fid", "is", "prc"]
    with pytest.raises(ConfigError, match=r"prc_reference: 'same'; valid: \['all', 'equal'\]"):
        EvaluateConfig.from_dict({"prc_reference": "same"})
    with pytest.raises(ConfigError, match="num_pr=3 must exceed prc_neighborhood=3"):
        EvaluateConfig.from_dict({"num_pr": 3})
    with pytest.raises(ConfigError, match="fid_bootstrap=1"):
        EvaluateConfig.from_dict({"fid_bootstrap": 1})
    ev = EvaluateConfig.from_dict({})
    assert (ev.num_pr, ev.prc_reference, ev.fid_bootstrap, ev.clean_fid_rtol) == (None, "all", 0, 0.01)
