"""Noise distributions ε for z = α x + σ ε: Gaussian and Relay Diffusion's block noise (Teng et al. 2023)."""

import math

import torch

from dimr.diffusion.registry import resolve_tagged
from dimr.errors import ConfigError


def draw(fn, shape, generator=None, device=None, dtype=torch.float32):
    """`fn(shape)` (torch.rand or torch.randn) drawn on the generator's device, then moved: the same
    numbers on CPU and CUDA.

    A list of generators draws sample i (row i of the first dimension) from generator i, so sample i
    depends only on its own generator: training keys one per image of the global batch, sampling one per
    image seed.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} samples")
        return torch.stack([draw(fn, shape[1:], g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def randn(shape, generator=None, device=None, dtype=None):
    """Standard normal, drawn in float32 (see `draw`), returned as `dtype`."""
    return draw(torch.randn, shape, generator, device).to(dtype or torch.float32)


def rand(shape, generator=None, device=None, dtype=torch.float64):
    """U(0, 1) in `dtype` (float64 for noise levels), see `draw`."""
    return draw(torch.rand, shape, generator, device, dtype)


def block_noise(eps: torch.Tensor, s: int) -> torch.Tensor:
    """Block_s(ε)_{x,y} = (1/s) Σ_{i,j<s} ε_{x−i, y−j}, circular (Relay Diffusion; unit variance).

    The s² rolls are done as s rolls along H then s along W; neighbours (dx, dy) inside a block are
    correlated by (s−|dx|)(s−|dy|)/s².
    """
    rows = sum(torch.roll(eps, i, dims=-2) for i in range(s))
    return sum(torch.roll(rows, j, dims=-1) for j in range(s)) / s


class GaussianNoise:
    """ε ~ N(0, I)."""

    def sample(self, shape, generator=None, device=None, dtype=None):
        return randn(shape, generator, device, dtype)


class BlockNoise:
    """Mixed noise ε + a·Block_s(ε′) (Relay Diffusion, Teng et al. 2023, §3.2)."""

    def __init__(self, a=0.15, s=4, normalize=False):
        # normalize=True: the paper's σ/√(1+a²)·(…) (unit variance); False: the official code's σ·(…).
        self.a, self.s, self.normalize = a, s, normalize

    def sample(self, shape, generator=None, device=None, dtype=None):
        eps = randn(shape, generator, device)
        block = block_noise(randn(shape, generator, device), self.s)  # drawn after ε
        n = eps + self.a * block
        if self.normalize:
            n = n / math.sqrt(1 + self.a**2)
        return n.to(dtype or torch.float32)


NOISES = {"gaussian": GaussianNoise, "block": BlockNoise}
NOISE_DEFAULTS = {"gaussian": {}, "block": {"a": 0.15, "s": 4, "normalize": False}}


def resolve_noise_config(cfg) -> dict:
    """{"type": name, **params} with defaults filled in; unknown names/params are ConfigErrors."""
    out = resolve_tagged("noise", cfg, NOISE_DEFAULTS)
    if out["type"] == "block" and (out["s"] < 1 or out["a"] < 0):
        raise ConfigError(f"noise block: need s >= 1 (block size) and a >= 0 (mixing weight), got {out}")
    return out


def build_noise(cfg):
    """Noise object from {"type": "gaussian" | "block", ...}; `.sample(shape, generator, device, dtype)`."""
    cfg = resolve_noise_config(cfg)
    return NOISES[cfg["type"]](**{k: v for k, v in cfg.items() if k != "type"})
