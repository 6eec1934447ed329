"""Cascaded diffusion (Ho et al. 2022, "Cascaded Diffusion Models"): a super-resolution network that also
sees the low-resolution image, upsampled to its side and concatenated to its input channels (§3).

In training the low-resolution image is made from the batch itself: area down-sampling (how the stage-1
data is made, `dimr.data.fit_resolution`), optionally Gaussian conditioning augmentation (§4.1), then
upsampling back. At sampling it is a stage-1 sample (`dimr.sampling.two_stage`), without augmentation.
"""

import torch
import torch.nn.functional as F

from dimr.diffusion.noise import rand, randn
from dimr.diffusion.registry import check_choice, resolve_tagged
from dimr.errors import ConfigError

UPSAMPLINGS = ("nearest", "bilinear")
CONDITION_DEFAULTS = {
    "none": {},  # an ordinary (stage-1 or single-stage) network
    "low-resolution": {
        "resolution": 16,          # side of the low-resolution image: the stage-1 network's resolution
        "upsample": "nearest",     # back to the network's side: nearest (the relay start) | bilinear
        # §4.1's Gaussian conditioning augmentation, low + σ·ε with σ ~ U(0, max) per image in training
        # (the network is not told σ; sampling conditions on the clean stage-1 image). 0: off.
        "augment_sigma_max": 0.0,
    },
}


def resolve_condition_config(cfg) -> dict:
    """{"type": "none"} or the low-resolution parameters with defaults filled in; bad values are errors."""
    out = resolve_tagged("condition", cfg, CONDITION_DEFAULTS)
    if out["type"] == "low-resolution":
        check_choice(out["upsample"], UPSAMPLINGS, "condition low-resolution.upsample")
        if out["resolution"] < 1 or out["augment_sigma_max"] < 0:
            raise ConfigError(f"condition low-resolution: need resolution >= 1 and augment_sigma_max >= 0, "
                              f"got {out}")
    return out


def low_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Area down-sampling of (N, C, H, W) to (N, C, r, r); H must be a multiple of r."""
    h = x.shape[-1]
    if h % resolution or h == resolution:
        raise ConfigError(f"condition low-resolution.resolution {resolution} must divide the network's "
                          f"resolution {h} and be smaller")
    return F.avg_pool2d(x, h // resolution)


def upsample(x_low: torch.Tensor, size: int, mode: str = "nearest") -> torch.Tensor:
    """(N, C, r, r) -> (N, C, size, size): nearest repeats each pixel; bilinear is half-pixel aligned."""
    check_choice(mode, UPSAMPLINGS, "upsample")
    if mode == "nearest":
        s = size // x_low.shape[-1]
        return x_low.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    return F.interpolate(x_low, size=(size, size), mode="bilinear", align_corners=False)


class ConcatCondition:
    """`model(z, c_noise, y)` with the conditioning image appended to z's channels (CDM §3)."""

    def __init__(self, model, cond: torch.Tensor):
        self.model, self.cond = model, cond
        self.num_classes = getattr(model, "num_classes", None)  # the null class of guidance

    def __call__(self, z, c_noise, y):
        cond = self.cond
        if z.shape[0] != cond.shape[0]:  # guidance passes [conditional; unconditional]: the same image
            cond = cond.repeat(z.shape[0] // cond.shape[0], 1, 1, 1)
        return self.model(torch.cat([z, cond.to(z.dtype)], dim=1), c_noise, y)      # (N, 2C, H, W) in


class CascadeObjective:
    """`loss(model, x, y)`: the low-resolution image of x (augmented), upsampled, concatenated; then the
    inner objective's loss on x. The augmentation draws come first from `generator`."""

    def __init__(self, inner, condition):
        self.inner, self.cfg = inner, resolve_condition_config(condition)
        if self.cfg["type"] != "low-resolution":
            raise ConfigError(f"CascadeObjective needs condition type 'low-resolution', got {self.cfg}")

    def condition(self, x, generator=None):
        """The upsampled (augmented) low-resolution image of a clean batch x (N, C, H, W)."""
        low = low_resolution(x, self.cfg["resolution"])                      # (N, C, r, r)
        if self.cfg["augment_sigma_max"] > 0:
            u = rand((len(x),), generator, x.device, torch.float32).to(x.dtype)
            sigma = (self.cfg["augment_sigma_max"] * u).reshape(-1, 1, 1, 1)
            low = low + sigma * randn(low.shape, generator, x.device, x.dtype)
        return upsample(low, x.shape[-1], self.cfg["upsample"])              # (N, C, H, W)

    def loss(self, model, x, y, generator=None):
        return self.inner.loss(ConcatCondition(model, self.condition(x, generator)), x, y, generator)
