"""Data sets by name: Fashion-MNIST (Debian IDX files), ImageNet-style folders, precomputed VAE latents.

The run config's `data` section is a plain dict validated by `DataConfig`; `build_dataset` turns it into
a Dataset of (x float32 (C, H, W) in [-1, 1] or scaled latents, y long).
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dimr.config import dataclass_from_dict
from dimr.errors import ConfigError, MissingFileError

from .fashion_mnist import (
    DEFAULT_ROOT,
    FASHION_MNIST_CLASSES,
    FIX,
    SPLITS,
    FashionMNIST,
    check_resolution,
    check_upsample,
    fit_resolution,
    load_fashion_mnist,
)
from .image_folder import ImageFolder, list_class_folders, list_images
from .latents import LatentDataset, check_vae_path, load_latents_file

DATASET_TYPES = ("fashion-mnist", "image-folder", "latents")


@dataclass
class DataConfig:
    """The `data` section of a run config."""

    type: str = "fashion-mnist"     # one of DATASET_TYPES
    root: str = DEFAULT_ROOT        # IDX folder (fashion-mnist) or class-folder root (image-folder)
    resolution: int = 32            # image side the model sees in pixels (latents: the encoded image side)
    hflip: bool = True              # random horizontal flip (latents: pick the flipped image's moments)
    latents: str | None = None      # file written by `dimr latents` (type latents)
    vae: str | None = None          # diffusers AutoencoderKL folder, to decode samples of latent models
    num_classes: int | None = None  # None: taken from the data; set: checked against it
    upsample: int = 1               # fashion-mnist: the side/upsample image, each pixel k×k (fit_resolution)

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        """Build from a plain dict; unknown keys and unknown types are errors that list the valid ones."""
        return dataclass_from_dict(cls, d, "data")

    def validate(self, where: str = "data"):
        if self.type not in DATASET_TYPES:
            raise ConfigError(f"unknown {where}.type {self.type!r}; valid: {list(DATASET_TYPES)}")
        if self.type == "latents" and not self.latents:
            raise ConfigError(f"{where}.type 'latents' needs `{where}.latents` (written by `dimr latents`)")
        if self.upsample != 1:
            if self.type != "fashion-mnist":
                raise ConfigError(f"{where}.upsample: Fashion-MNIST only (got type {self.type!r}); remove it")
            check_upsample(self.resolution, self.upsample)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_classes(cfg: DataConfig, found: int) -> int:
    if cfg.num_classes is not None and cfg.num_classes != found:
        raise ConfigError(f"data.num_classes is {cfg.num_classes} but the {cfg.type} data has {found} "
                          "classes; remove the key or fix it")
    return found


def build_dataset(cfg, split: str = "train"):
    """Dataset of (x, y) for a `data` config dict and split ('train' | 'test')."""
    cfg = DataConfig.from_dict(cfg)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {sorted(SPLITS)}")
    if cfg.type == "fashion-mnist":
        ds = FashionMNIST(cfg.root, split, cfg.resolution, cfg.hflip and split == "train", cfg.upsample)
    elif split != "train":  # ImageNet references are ADM's reference batches, not a split of ours
        raise ConfigError(
            f"data.type {cfg.type!r} has only a 'train' split; metrics use reference statistics")
    elif cfg.type == "image-folder":
        ds = ImageFolder(cfg.root, cfg.resolution, cfg.hflip)
    else:
        ds = LatentDataset(cfg.latents, cfg.hflip)
        _check_latent_resolution(cfg, ds.meta)
    _check_classes(cfg, ds.num_classes)
    return ds


def _check_latent_resolution(cfg: DataConfig, meta: dict) -> None:
    if meta["resolution"] != cfg.resolution:
        raise ConfigError(f"{cfg.latents} holds {meta['resolution']}px images but data.resolution is "
                          f"{cfg.resolution}; set data.resolution to {meta['resolution']}")


def dataset_shape(cfg) -> tuple[int, int, int]:
    """(channels, resolution, num_classes) of what the model sees, without loading the data."""
    cfg = DataConfig.from_dict(cfg)
    if cfg.type == "fashion-mnist":
        check_resolution(cfg.resolution)
        return 1, cfg.resolution, _check_classes(cfg, len(FASHION_MNIST_CLASSES))
    if cfg.type == "image-folder":
        return 3, cfg.resolution, _check_classes(cfg, len(list_class_folders(cfg.root)))
    meta = load_latents_file(cfg.latents)["meta"]
    _check_latent_resolution(cfg, meta)
    return meta["latent_channels"], meta["latent_resolution"], _check_classes(cfg, len(meta["classes"]))


def validate_data_config(cfg) -> DataConfig:
    """Check keys and that every file the run needs exists (cheap; train calls it before any compute)."""
    cfg = DataConfig.from_dict(cfg)
    if cfg.type == "fashion-mnist":
        for images_file, labels_file, _ in SPLITS.values():
            for name in (images_file, labels_file):
                if not (Path(cfg.root) / name).is_file():
                    raise MissingFileError(f"Fashion-MNIST file not found: {Path(cfg.root) / name}; {FIX}.")
    elif cfg.type == "image-folder":
        first = Path(cfg.root) / list_class_folders(cfg.root)[0]
        if not list_images(first):
            raise MissingFileError(f"no images in {first}; check `data.root`")
    else:
        if cfg.vae is not None:
            check_vae_path(cfg.vae)
    dataset_shape(cfg)  # latents: reads the file's metadata; all: checks resolution and num_classes
    return cfg


__all__ = [
    "DATASET_TYPES",
    "FASHION_MNIST_CLASSES",
    "DataConfig",
    "FashionMNIST",
    "build_dataset",
    "check_resolution",
    "dataset_shape",
    "fit_resolution",
    "load_fashion_mnist",
    "validate_data_config",
]
