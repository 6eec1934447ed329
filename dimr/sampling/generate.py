"""Generate images from a finished run: image i depends only on its seed (and the run)."""

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from dimr.data.latents import decode_latents
from dimr.diffusion import sample_from_noise
from dimr.errors import MissingFileError
from dimr.models import build_model
from dimr.training.checkpoint import FINAL_NETWORK, load_state


def class_label(seeds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-balanced labels that depend only on the seed: 50K seeds from 0 give 50 per class."""
    return seeds % num_classes


def image_noise(seeds, shape, dtype=torch.float32) -> torch.Tensor:
    """x_T for each seed, drawn on the CPU so that it is the same on every device and batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds])


def load_network(run_dir, ema: bool = True, device="cpu") -> torch.nn.Module:
    """The finished network of a run (EMA weights by default), in eval mode."""
    path = Path(run_dir) / FINAL_NETWORK
    if not path.exists():
        raise MissingFileError(f"{path} not found: the run has not finished training; "
                               f"run `dimr train {run_dir}` first")
    return network_from_state(load_state(path, what="network"), "ema" if ema else "model", device)


def network_from_state(state: dict, weights: str = "ema", device="cpu") -> torch.nn.Module:
    """The network of a final-network or snapshot state (its `model_config` and `weights`), in eval mode."""
    net = build_model(state["model_config"])
    net.load_state_dict(state[weights])
    return net.to(device).eval().requires_grad_(False)


@torch.no_grad()
def generate_images(net, cfg: dict, seeds: torch.Tensor, device="cpu", vae=None) -> np.ndarray:
    """Sample the given seeds with the run's sampler; returns (N, H, W, C) uint8."""
    noise = image_noise(seeds, (net.in_channels, net.resolution, net.resolution)).to(device)
    labels = class_label(seeds, net.num_classes).to(device)
    x = sample_from_noise(net, cfg["diffusion"], cfg["sample"]["sampler"], noise, labels)
    if vae is not None:  # latent models: decode to pixels with the configured VAE
        x = decode_latents(vae, x)
    return to_uint8(x)


def generate_all(net, cfg: dict, seeds: torch.Tensor, device="cpu", batch: int = 250) -> np.ndarray:
    """`generate_images` over `seeds` in batches of `batch` (speed only: each image depends on its seed)."""
    return np.concatenate([generate_images(net, cfg, seeds[i:i + batch], device)
                           for i in range(0, len(seeds), batch)])


class GeneratedImages:
    """A network's images made batch by batch as the evaluator asks for them (no samples file).

    The first `keep` images are held (the grid, the clean-fid subset) and served again without sampling;
    `sha256` is the hash of every image's bytes in seed order, as far as the first pass went.
    """

    def __init__(self, net, cfg: dict, seeds: torch.Tensor, device="cpu", vae=None, keep: int = 0):
        self.net, self.cfg, self.seeds, self.device, self.vae, self.keep = net, cfg, seeds, device, vae, keep
        self.held = np.zeros((0,), np.uint8)  # the first `keep` images, once made
        self._hash, self._hashed = hashlib.sha256(), 0
        self.seconds = 0.0  # wall time spent sampling

    def __len__(self):
        return len(self.seeds)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def batches(self, batch_size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            if j <= len(self.held):
                yield self.held[i:j]
                continue
            t0 = time.perf_counter()
            images = generate_images(self.net, self.cfg, self.seeds[i:j], self.device, self.vae)
            self.seconds += time.perf_counter() - t0
            if i == len(self.held) and i < self.keep:
                part = images[: self.keep - i]
                self.held = np.concatenate([self.held, part]) if i else part.copy()
            if i == self._hashed:
                self._hash.update(np.ascontiguousarray(images).tobytes())
                self._hashed = j
            yield images

    def all(self, batch_size: int = 250) -> np.ndarray:
        """Every image, as one array (for samples.npz)."""
        return np.concatenate(list(self.batches(batch_size)))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8, rounding like ADM's sampler."""
    x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
