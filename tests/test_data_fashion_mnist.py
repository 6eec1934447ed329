"""Fashion-MNIST from the Debian IDX files: sizes, balance, scaling, padding, and the error paths."""

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dimr.data.fashion_mnist import (
    DEFAULT_ROOT,
    FASHION_MNIST_CLASSES,
    CorruptedFileError,
    FashionMNIST,
    load_fashion_mnist,
)
from dimr.errors import MissingFileError


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_splits_have_published_sizes_labels_and_balance(split, n):
    images, labels = load_fashion_mnist(DEFAULT_ROOT, split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == len(FASHION_MNIST_CLASSES) - 1 == 9
    assert np.bincount(labels).tolist() == [n // 10] * 10  # 6000 (train) / 1000 (test) per class
    assert images.min() == 0 and images.max() == 255
    assert load_fashion_mnist(DEFAULT_ROOT, split)[0] is images  # read once per process


def test_items_are_scaled_to_unit_range_and_padded_with_background():
    images, labels = load_fashion_mnist(DEFAULT_ROOT, "test")
    ds = FashionMNIST(DEFAULT_ROOT, "test", resolution=32, hflip=False)
    assert len(ds) == 10000
    for i in (0, 1, 9999):
        x, y = ds[i]
        assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
        assert int(y) == labels[i]
        assert x.min() >= -1 and x.max() <= 1
        inner = torch.from_numpy(images[i].astype(np.float32)) / 127.5 - 1
        torch.testing.assert_close(x[0, 2:30, 2:30], inner, rtol=0, atol=1e-6)
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (x[0][border] == -1).all()  # background (pixel 0) after scaling
    brightest = int(np.argmax(images.reshape(len(images), -1).max(1)))  # an image with a 255 pixel
    assert ds[brightest][0].max() == 1.0


def test_random_flip_returns_the_image_or_its_mirror():
    plain = FashionMNIST(DEFAULT_ROOT, "test", hflip=False)
    flipped = FashionMNIST(DEFAULT_ROOT, "test", hflip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        x, ref = flipped[3][0], plain[3][0]
        assert torch.equal(x, ref) or torch.equal(x, ref.flip(-1))
        seen.add(torch.equal(x, ref))
    assert seen == {True, False}


def test_missing_root_names_path_and_apt_get(tmp_path):
    with pytest.raises(MissingFileError, match="apt-get install dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path / "nope", "train")
    assert "nope" in str(e.value)
    (tmp_path / "partial").mkdir()
    with pytest.raises(MissingFileError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path / "partial", "test")


def _write_idx(path, magic, dims, payload: bytes):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(f">{1 + len(dims)}i", magic, *dims) + payload)


@pytest.mark.parametrize("defect, match", [
    ("bad-magic", "magic number 2049, expected 2051"),
    ("wrong-count", r"dimensions \(9999, 28, 28\)"),
    ("short-data", "truncated"),
    ("truncated-gzip", "cannot decompress"),
])
def test_corrupted_idx_files_raise_a_clear_error(tmp_path, defect, match):
    shutil.copy(f"{DEFAULT_ROOT}/t10k-labels-idx1-ubyte.gz", tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    if defect == "bad-magic":
        _write_idx(images, 2049, (10000, 28, 28), bytes(10000 * 784))
    elif defect == "wrong-count":
        _write_idx(images, 2051, (9999, 28, 28), bytes(9999 * 784))
    elif defect == "short-data":
        _write_idx(images, 2051, (10000, 28, 28), bytes(10000 * 784 - 5))
    else:
        raw = Path(DEFAULT_ROOT, "t10k-images-idx3-ubyte.gz").read_bytes()
        images.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptedFileError, match=match) as e:
        load_fashion_mnist(tmp_path, "test")
    assert isinstance(e.value, MissingFileError) and str(images) in str(e.value)
