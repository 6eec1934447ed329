"""Fashion-MNIST above its content's resolution (data.upsample, evaluate.upsample): the resolution study."""

import numpy as np
import pytest

from dimr.data import DataConfig, fit_resolution
from dimr.errors import ConfigError
from dimr.metrics.fidnet import pad_to_resolution
from dimr.run_config import resolve_run_config, train_identity


def test_upsampled_images_repeat_each_pixel_and_pool_back_exactly():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    low, high = fit_resolution(images, 32), fit_resolution(images, 64, upsample=2)
    assert high.shape == (3, 64, 64) and high.dtype == np.uint8
    assert (high[:, ::2, ::2] == low).all() and (high[:, 1::2, 1::2] == low).all()
    pooled = high.reshape(3, 32, 2, 32, 2).astype(float).mean((2, 4))
    assert (pooled == low).all()  # a 2×2 average pool gives the 32-px image back (multi-scale losses see it)
    half = fit_resolution(images, 16)
    assert (fit_resolution(images, 32, upsample=2) == half.repeat(2, 1).repeat(2, 2)).all()
    assert (pad_to_resolution(images, 64, 2)[..., 0] == high).all()  # the feature net sees the same images


def test_upsample_is_checked_and_leaves_existing_identities_unchanged():
    for bad in (0, 3, True):
        with pytest.raises(ConfigError, match="upsample"):
            DataConfig.from_dict({"resolution": 64, "upsample": bad})
    with pytest.raises(ConfigError, match="Fashion-MNIST only"):
        DataConfig.from_dict({"type": "image-folder", "resolution": 64, "upsample": 2})
    cfg = resolve_run_config({"preset": "tiny-dimr", "recipe": "tiny-fmnist", "data": {"upsample": 1}})
    plain = resolve_run_config({"preset": "tiny-dimr", "recipe": "tiny-fmnist"})
    assert train_identity(cfg) == train_identity(plain)  # a default field leaves the identity unchanged
    up = resolve_run_config({"preset": "tiny-dimr", "recipe": "tiny-fmnist",
                             "data": {"resolution": 64, "upsample": 2}})
    assert up["model"]["resolution"] == 64 and train_identity(up) != train_identity(cfg)


def test_evaluate_upsample_scores_a_lower_side_as_the_higher_sides_data():
    """16-px samples scored with evaluate.upsample 2 are exactly the 32-px data of 16-px content
    (data.upsample 2), so one feature net, one reference and one table hold both sides."""
    from dimr.metrics.evaluate import EvaluateConfig
    from dimr.metrics.fidelity import Upsampled, image_batches

    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    low = fit_resolution(images, 16)[..., None]                 # (5, 16, 16, 1) as samples.npz holds
    high = fit_resolution(images, 32, upsample=2)[..., None]    # the 32-px rows' data
    batches = list(image_batches(Upsampled(low, 2), 2))
    assert [len(b) for b in batches] == [2, 2, 1] and len(Upsampled(low, 2)) == 5
    assert (np.concatenate(batches) == high).all()
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="evaluate.upsample"):
            EvaluateConfig.from_dict({"upsample": bad}).validate()


def test_mrn_last_branch_needs_patch_one():
    """An MRN head predicts on its token grid: with a last patch above 1 the network's output would
    be smaller than its input (patches [16, 8, 4] at 64 px predicted 16-px images)."""
    with pytest.raises(ConfigError, match=r"patch 1.*\[4, 2, 1\]"):
        resolve_run_config({"preset": "tiny-dimr", "data": {"resolution": 64, "upsample": 4},
                            "model": {"patch_sizes": [16, 8, 4]}})
