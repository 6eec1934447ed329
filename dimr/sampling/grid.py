"""A sample grid PNG for people (not used by any metric)."""

import io
import math

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from dimr.io import atomic_write_bytes


def save_grid(path, images: np.ndarray, labels: np.ndarray | None = None, scale: int = 2):
    """Save images (N, H, W, C) uint8 as a square grid, sorted by label so classes form rows."""
    if labels is not None:
        images = images[np.argsort(labels, kind="stable")]
    c = images.shape[-1]
    cols = math.ceil(math.sqrt(len(images)))
    grid = make_grid(torch.tensor(images).permute(0, 3, 1, 2), nrow=cols, padding=0)  # (3 or C, H', W')
    canvas = grid.permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(canvas[..., 0] if c == 1 else canvas)  # make_grid repeats one channel as RGB
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
