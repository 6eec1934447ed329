"""Fashion-MNIST read straight from Debian's `dataset-fashion-mnist` IDX files (no download)."""

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dimr.errors import ConfigError, MissingFileError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SPLITS = {  # split -> (images file, labels file, number of examples)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX: 0x0000 + dtype 0x08 (uint8) + number of dims (3 or 1)
SIZE = 28
FIX = ("install it with `sudo apt-get install dataset-fashion-mnist`, "
       "or set `data.root` to a folder holding it")


class CorruptedFileError(MissingFileError):
    """An IDX file whose header or length does not match Fashion-MNIST (as bad as a missing one)."""


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Read one gzip IDX file and check its magic number, dimensions and length."""
    if not path.is_file():
        raise MissingFileError(f"Fashion-MNIST file not found: {path}; {FIX}.")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # truncated gzip stream or not gzip at all
        raise CorruptedFileError(f"cannot decompress {path} ({e}); the file is corrupted: reinstall it "
                                 "(`sudo apt-get install --reinstall dataset-fashion-mnist`).") from e
    header = 4 * (1 + len(shape))
    if len(raw) < header:
        raise CorruptedFileError(f"{path} is {len(raw)} bytes, shorter than its IDX header; reinstall it.")
    got_magic, *dims = struct.unpack(f">{1 + len(shape)}i", raw[:header])
    if got_magic != magic:
        raise CorruptedFileError(f"{path}: IDX magic number {got_magic}, expected {magic}; "
                                 "is this the right file? Reinstall `dataset-fashion-mnist`.")
    if tuple(dims) != shape:
        raise CorruptedFileError(f"{path}: IDX dimensions {tuple(dims)}, expected {shape}; reinstall it.")
    if len(raw) - header != int(np.prod(shape)):
        raise CorruptedFileError(f"{path}: {len(raw) - header} data bytes, expected {int(np.prod(shape))} "
                                 "(truncated?); reinstall `dataset-fashion-mnist`.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_cached(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file, n = SPLITS[split]
    if not Path(root).is_dir():
        raise MissingFileError(f"Fashion-MNIST folder not found: {root}; {FIX}.")
    images = _read_idx(Path(root) / images_file, IMAGE_MAGIC, (n, SIZE, SIZE))
    labels = _read_idx(Path(root) / labels_file, LABEL_MAGIC, (n,)).astype(np.int64)
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise CorruptedFileError(
            f"{root}/{labels_file}: label {labels.max()} out of range 0..9; reinstall it.")
    images.flags.writeable = False  # shared by every caller of the cache
    labels.flags.writeable = False
    return images, labels


def load_fashion_mnist(root=DEFAULT_ROOT, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split; read once per process (read-only)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; valid: {sorted(SPLITS)}")
    return _load_cached(str(Path(root).expanduser().resolve()), split)


def check_resolution(resolution: int) -> int:
    """28 + an even padding (32: the usual padded side), or 14 + an even padding (16: half size)."""
    if not isinstance(resolution, int) or resolution < SIZE // 2 or resolution % 2:
        raise ConfigError(f"Fashion-MNIST resolution must be 28 or 14 plus an even padding (32, 16), "
                          f"got {resolution!r}")
    return resolution


def fit_resolution(images: np.ndarray, resolution: int, upsample: int = 1) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, R, R): below 28, 2×2 area down-sampling to 14 first; then padding; with
    `upsample` k, the image of side R/k so made, each pixel repeated k×k (nearest up-sampling).

    Padding is background (0). The down-sampled pixel is the rounded 2×2 mean, so the training data,
    the reference statistics and every metric see the same uint8 images. Up-sampled, a k×k average pool
    gives back the R/k image exactly (a high-resolution image with the information of a low one: simple
    diffusion's setting, Hoogeboom et al. 2023 §2).
    """
    check_upsample(resolution, upsample)
    side = check_resolution(resolution // upsample)
    if side < SIZE:
        n = len(images)
        mean = images.reshape(n, SIZE // 2, 2, SIZE // 2, 2).astype(np.uint16).sum((2, 4))
        images = ((mean + 2) // 4).astype(np.uint8)  # round half up, exactly in integers
    p = (side - images.shape[-1]) // 2
    images = np.pad(images, ((0, 0), (p, p), (p, p)))
    return images.repeat(upsample, axis=1).repeat(upsample, axis=2) if upsample > 1 else images


def check_upsample(resolution: int, upsample: int) -> int:
    """A positive integer factor that divides the resolution."""
    if not isinstance(upsample, int) or isinstance(upsample, bool) or upsample < 1 or resolution % upsample:
        raise ConfigError(f"Fashion-MNIST upsample must be a positive integer dividing the resolution "
                          f"{resolution} (64 with upsample 2: the 32-px image, each pixel 2×2), "
                          f"got {upsample!r}")
    return upsample


class FashionMNIST(Dataset):
    """Fashion-MNIST as (x float32 (1, R, R) in [-1, 1], y long); see `fit_resolution`."""

    def __init__(self, root=DEFAULT_ROOT, split: str = "train", resolution: int = 32, hflip: bool = False,
                 upsample: int = 1):
        images, labels = load_fashion_mnist(root, split)
        images = fit_resolution(images, resolution, upsample)
        self.images = torch.from_numpy(images).float().div(127.5).sub(1.0)[:, None]  # (N, 1, R, R)
        self.labels = torch.from_numpy(labels.copy())  # (N,) int64
        self.resolution, self.hflip = resolution, hflip
        self.num_classes = len(FASHION_MNIST_CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]  # (1, R, R); background 0 -> -1
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]
