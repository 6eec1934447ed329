"""The Inception code paths end to end on RANDOMLY INITIALISED stand-in weights (numbers meaningless).

No Inception weights can be fetched here (no network), so the tests write files of the right format:
torch-fidelity's FeatureExtractorInceptionV3 state_dict, and a tiny TorchScript module with the
interface of clean-fid's inception-2015-12-05.pt.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from dimr.errors import MissingFileError
from dimr.io import atomic_savez, atomic_write_json, sha256_file
from dimr.metrics import clean_fid_check, extractors
from dimr.metrics.evaluate import evaluate_run
from dimr.metrics.fidelity import Extractor, NpzImages
from dimr.metrics.reference import make_reference, reference_images


class RandomInception(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception architecture that keeps its random initialisation."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = RandomInception("inception-v3-compat", ["2048"],
                              feature_extractor_weights_path=folder / "empty.pth")
        for m in net.modules():  # variance-preserving init: features neither vanish nor explode
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = folder / extractors.TFID_INCEPTION_FILE
    torch.save(net.state_dict(), path)  # the format torch-fidelity loads: a plain state_dict
    return path


def tiny_images(n, seed, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, channels), dtype=np.uint8)


def test_missing_inception_weights_name_the_file_and_the_fetch_command(tmp_path):
    with pytest.raises(MissingFileError, match=r"weights-inception-2015-12-05-6726825d\.pth.*curl -L -o"):
        extractors.resolve_weights("inception-v3-compat", tmp_path / extractors.TFID_INCEPTION_FILE)


def test_stand_in_weights_fail_the_official_hash(random_weights):
    with pytest.raises(MissingFileError, match=f"expected {extractors.TFID_INCEPTION_SHA256}"):
        extractors.resolve_weights("inception-v3-compat", random_weights)


def test_inception_path_runs_end_to_end_on_random_weights(random_weights, tmp_path):
    sha = sha256_file(random_weights)
    extractor = Extractor("inception-v3-compat", random_weights, sha, device="cpu")
    assert extractor.weights.meaningful is False
    atomic_savez(tmp_path / "real.npz", arr_0=tiny_images(12, 0, channels=1))  # grey -> RGB inside
    src, meta = reference_images(str(tmp_path / "real.npz"))
    assert isinstance(src, NpzImages)
    make_reference(tmp_path / "ref.npz", extractor, src, meta, num_pr=12, batch_size=12)
    run = tmp_path / "run"
    run.mkdir()
    atomic_savez(run / "samples.npz", arr_0=tiny_images(12, 1), labels=np.zeros(12, np.int64),
                 seeds=np.arange(12))
    atomic_write_json(run / "config.json", {"evaluate": {
        "extractor": "inception-v3-compat", "extractor_weights": str(random_weights), "extractor_sha256": sha,
        "reference": str(tmp_path / "ref.npz"), "num_pr": 12}})
    result = evaluate_run(run, batch_size=12, device="cpu")
    m, p = result["metrics"], result["protocol"]
    assert p["meaningful"] is False and p["extractor"] == "inception-v3-compat"
    assert p["feature_layer_fid"] == "2048" and p["feature_layer_is"] == "logits_unbiased"
    assert np.isfinite(m["fid"]) and m["fid"] > 0 and m["is_mean"] >= 1.0
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert m["accuracy"] is None  # TF-Inception's 1008 logits are not in the labels' class order
    assert p["prc_num_samples"] == p["prc_num_reference"] == 12 and p["is_splits"] == 1
    assert json.loads((run / "metrics.json").read_text())["protocol"]["meaningful"] is False


class StandInCleanFidInception(torch.nn.Module):
    """clean-fid's TorchScript interface: `layers` on 299×299 inputs, `forward(x, return_features)`."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                          torch.nn.Linear(48, 2048))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


@pytest.fixture(scope="module")
def cleanfid_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("cleanfid") / "stand-in-inception.pt"  # not clean-fid's file name
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(StandInCleanFidInception()), str(path))
    return path


@pytest.mark.parametrize("mode", clean_fid_check.MODES)
def test_clean_fid_inception_modes_use_the_configured_file_not_tmp(cleanfid_weights, mode, monkeypatch):
    from cleanfid import fid as cfid

    seen = []

    def cheap_distance(mu1, sigma1, mu2, sigma2):  # clean-fid's 2048-d sqrtm takes ~30 s on 2 cores
        seen.append((mu1, mu2))
        return float(((mu1 - mu2) ** 2).sum())

    monkeypatch.setattr(cfid, "frechet_distance", cheap_distance)
    tmp_file = Path("/tmp") / extractors.CLEANFID_INCEPTION_FILE
    existed = tmp_file.exists()
    score = clean_fid_check.clean_fid(tiny_images(8, 2), tiny_images(8, 3), None, mode, cleanfid_weights,
                                      sha256_file(cleanfid_weights), batch_size=8, device="cpu")
    assert np.isfinite(score) and score > 0 and seen[0][0].shape == (2048,)
    assert tmp_file.exists() == existed  # nothing written to clean-fid's hard-coded /tmp location


def test_clean_fid_weights_missing_or_unknown_are_errors(cleanfid_weights, tmp_path):
    with pytest.raises(MissingFileError, match=r"inception-2015-12-05\.pt.*nvlabs-fi-cdn"):
        clean_fid_check.check_cleanfid_weights(tmp_path / extractors.CLEANFID_INCEPTION_FILE)
    with pytest.raises(MissingFileError, match=f"expected {extractors.CLEANFID_INCEPTION_SHA256}"):
        clean_fid_check.check_cleanfid_weights(cleanfid_weights)  # stand-in != official file
