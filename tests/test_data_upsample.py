"""Fashion-MNIST above its content's resolution (data.upsample): the 64-px images of the resolution study."""

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
