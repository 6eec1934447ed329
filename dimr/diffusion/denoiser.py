"""The sampling-time denoiser D(z, λ, y) -> x̂0, with classifier-free guidance (Ho & Salimans 2022, Eq. 6)."""

import math
from dataclasses import dataclass

import torch

from dimr.config import dataclass_from_dict
from dimr.diffusion.objective import as_diffusion_config
from dimr.diffusion.parametrization import append_dims, get_prediction
from dimr.diffusion.registry import check_choice
from dimr.diffusion.schedules import alpha_sigma, build_schedule, get_c_noise
from dimr.errors import ConfigError

GUIDANCE_RAMPS = ("constant", "power-cosine")
GUIDANCE_CHANNELS = ("all", "dit-first3")


@dataclass
class GuidanceConfig:
    """Classifier-free guidance ε = ε_c + s·(ε_c − ε_u) (Ho & Salimans 2022); the paper's w = 1 + s."""

    scale: float = 0.0          # s; 0 disables guidance (one network pass). Official DiMR: 0.4
    ramp: str = "constant"      # constant | power-cosine: s(t) = s·(1 − cos(π(1−t)^p))/2 (MDT)
    power: float = 1.0          # p of the power-cosine ramp
    channels: str = "all"       # all | dit-first3: DiT's sampler guides only channels 0..2 (of 4)

    @classmethod
    def from_dict(cls, d) -> "GuidanceConfig":
        return dataclass_from_dict(cls, d if d is not None else {})

    def validate(self, where: str = ""):
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise ConfigError(f"guidance.scale: expected a number, got {self.scale!r}")
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)) or self.power <= 0:
            raise ConfigError(f"guidance.power: expected a positive number, got {self.power!r}")
        self.scale, self.power = float(self.scale), float(self.power)
        check_choice(self.ramp, GUIDANCE_RAMPS, "guidance ramp")
        check_choice(self.channels, GUIDANCE_CHANNELS, "guidance channels")


def guidance_scale(cfg: GuidanceConfig, t: torch.Tensor) -> torch.Tensor:
    """s(t): constant, or the power-cosine ramp from 0 at t = 1 (noisiest) to s at t = 0."""
    if cfg.ramp == "constant":
        return torch.full_like(t, cfg.scale)
    return cfg.scale * (1 - torch.cos(math.pi * (1 - t) ** cfg.power)) / 2


class Denoiser:
    """D(z, λ, y) -> x̂0 in float32 for a model `model(z, c_noise, y) -> [.., full-res prediction]`."""

    def __init__(self, model, diffusion_cfg, guidance_cfg=None):
        cfg = as_diffusion_config(diffusion_cfg)
        if cfg.process["type"] != "vp":
            raise ConfigError(f"Denoiser samples process vp, got {cfg.process['type']!r}: a relay-blur "
                              "network is sampled from stage-1 images (dimr.diffusion.relay.sample_stage2)")
        self.model = model
        self.schedule = build_schedule(cfg.schedule)
        self.prediction = get_prediction(cfg.prediction)
        self._c_noise = get_c_noise(cfg.c_noise)
        self.guidance = (guidance_cfg if isinstance(guidance_cfg, GuidanceConfig)
                         else GuidanceConfig.from_dict(guidance_cfg))

    def _x0(self, z, lam, y):
        c = z.shape[1]
        alpha, sigma = (append_dims(v.float(), z.ndim) for v in alpha_sigma(lam))
        out = self.model(z, self._c_noise(lam, self.schedule).float(), y)[-1][:, :c].float()
        return self.prediction.to_x0_eps(out, z, alpha, sigma)[0]                # (N, C, H, W)

    def __call__(self, z, lam, y):
        n = z.shape[0]
        z = z.float()
        lam = torch.as_tensor(lam, dtype=torch.float64, device=z.device).expand(n)  # (N,)
        if self.guidance.scale == 0:
            return self._x0(z, lam, y)
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y; set guidance.scale: 0 to sample "
                             "an unconditional model")
        null = torch.full_like(y, self.model.num_classes)  # the null class is the last table entry
        x0_c, x0_u = self._x0(torch.cat([z, z]), torch.cat([lam, lam]), torch.cat([y, null])).chunk(2)
        # Guidance is affine in the prediction, so mixing x̂0 equals mixing ε̂ (or v̂) for the same z.
        delta = x0_c - x0_u
        if self.guidance.channels == "dit-first3":
            delta[:, 3:] = 0  # DiT sample.py: `eps, rest = model_out[:, :3], model_out[:, 3:]`
        s = guidance_scale(self.guidance, self.schedule.t_of_logsnr(lam)).float()
        return x0_c + append_dims(s, z.ndim) * delta
