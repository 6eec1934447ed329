"""A sample grid PNG for people (not used by any metric)."""

import io
import math

import numpy as np
from PIL import Image

from dimr.io import atomic_write_bytes


def save_grid(path, images: np.ndarray, labels: np.ndarray | None = None, scale: int = 2):
    """Save images (N, H, W, C) uint8 as a square grid, sorted by label so classes form rows."""
    if labels is not None:
        images = images[np.argsort(labels, kind="stable")]
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    pil = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
