"""The `data` config section: key and type checks, dataset shapes, file validation before training."""

import pytest

from dimr.data import DataConfig, build_dataset, dataset_shape, validate_data_config
from dimr.data.fashion_mnist import FashionMNIST
from dimr.errors import ConfigError, MissingFileError


def test_unknown_keys_wrong_types_and_unknown_types_list_the_valid_choices():
    with pytest.raises(ConfigError, match=r"\['resolutoin'\]; valid keys: \['type', 'root', 'resolution'"):
        DataConfig.from_dict({"resolutoin": 32})
    with pytest.raises(ConfigError, match="data.resolution must be int"):
        DataConfig.from_dict({"resolution": "32"})
    with pytest.raises(ConfigError, match="data.hflip must be bool"):
        DataConfig.from_dict({"hflip": 1})
    with pytest.raises(ConfigError, match=r"valid: \['fashion-mnist', 'image-folder', 'latents'\]"):
        DataConfig.from_dict({"type": "imagenet"})
    with pytest.raises(ConfigError, match="needs `data.latents`"):
        DataConfig.from_dict({"type": "latents"})
    assert DataConfig.from_dict(DataConfig().to_dict()) == DataConfig()


def test_fashion_mnist_default_shape_and_splits():
    assert dataset_shape({}) == (1, 32, 10)
    ds = build_dataset({"hflip": True}, "test")
    assert isinstance(ds, FashionMNIST) and len(ds) == 10000 and not ds.hflip  # never flip the test split
    assert ds[0][0].shape == (1, 32, 32)
    with pytest.raises(ConfigError, match="28 or 14 plus an even"):
        dataset_shape({"resolution": 31})
    with pytest.raises(ConfigError, match="valid: \\['test', 'train'\\]"):
        build_dataset({}, "val")


def test_validation_finds_missing_files_before_any_compute(tmp_path):
    assert validate_data_config({}) == DataConfig()
    with pytest.raises(MissingFileError, match="apt-get install dataset-fashion-mnist"):
        validate_data_config({"root": str(tmp_path)})
    with pytest.raises(MissingFileError, match="image folder not found"):
        validate_data_config({"type": "image-folder", "root": str(tmp_path / "imagenet")})
    with pytest.raises(ConfigError, match="only a 'train' split"):
        build_dataset({"type": "image-folder", "root": str(tmp_path)}, "test")
    with pytest.raises(ConfigError, match="num_classes is 1000"):
        dataset_shape({"num_classes": 1000})
