"""Generate images from a finished run: image i depends only on its seed (and the run)."""

from pathlib import Path

import numpy as np
import torch

from dimr.errors import MissingFileError
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
    from dimr.models import build_model

    net = build_model(state["model_config"])
    net.load_state_dict(state[weights])
    return net.to(device).eval().requires_grad_(False)


@torch.no_grad()
def generate_images(net, cfg: dict, seeds: torch.Tensor, device="cpu", vae=None) -> np.ndarray:
    """Sample the given seeds with the run's sampler; returns (N, H, W, C) uint8."""
    from dimr.diffusion import sample_from_noise

    noise = image_noise(seeds, (net.in_channels, net.resolution, net.resolution)).to(device)
    labels = class_label(seeds, net.num_classes).to(device)
    x = sample_from_noise(net, cfg["diffusion"], cfg["sample"]["sampler"], noise, labels)
    if vae is not None:  # latent models: decode to pixels with the configured VAE
        from dimr.data.latents import decode_latents

        x = decode_latents(vae, x)
    return to_uint8(x)


def generate_all(net, cfg: dict, seeds: torch.Tensor, device="cpu", batch: int = 250) -> np.ndarray:
    """`generate_images` over `seeds` in batches of `batch` (speed only: each image depends on its seed)."""
    return np.concatenate([generate_images(net, cfg, seeds[i:i + batch], device)
                           for i in range(0, len(seeds), batch)])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8, rounding like ADM's sampler."""
    x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
