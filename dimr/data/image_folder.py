"""ImageNet-style class folders with ADM's centre crop (guided-diffusion `image_datasets.py`)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dimr.errors import MissingFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM's `center_crop_arr`: BOX halvings, BICUBIC resize of the short side, centre crop."""
    # Halve with BOX while the short side stays >= 2·size (ADM does this by hand for old PIL's missing
    # `reducing_gap`); it is part of the protocol because it changes the pixels of the reference set.
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


def list_class_folders(root) -> list[str]:
    """Sorted names of the class sub-folders of `root` (label id = position in this list)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"image folder not found: {root}; set `data.root` to a folder with one "
                               "sub-folder per class (ImageNet layout: train/n01440764/*.JPEG).")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise MissingFileError(f"no class sub-folders in {root}; put the images of each class in its "
                               "own sub-folder (root/<class>/<image>.jpg).")
    return classes


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted so label and index order never depend on the OS."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class ImageFolder(Dataset):
    """Class folders as (x float32 (3, R, R) in [-1, 1], y long), ADM centre crop, optional random flip."""

    def __init__(self, root, resolution: int = 256, hflip: bool = False):
        self.root, self.resolution, self.hflip = Path(root), resolution, hflip
        self.classes = list_class_folders(root)
        self.files, labels = [], []
        for label, name in enumerate(self.classes):
            found = list_images(self.root / name)
            self.files += found
            labels += [label] * len(found)
        if not self.files:
            raise MissingFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of "
                                   f"{self.root}; check `data.root`.")
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        """Centre-cropped uint8 (R, R, 3) array of image `i` (no flip)."""
        with Image.open(self.files[i]) as im:
            return center_crop_arr(im.convert("RGB"), self.resolution)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.load(i)).permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, R, R)
        if self.hflip and torch.rand(()) < 0.5:  # ADM's random_flip
            x = x.flip(-1)
        return x, self.labels[i]
