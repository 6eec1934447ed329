"""The training objective: draw λ and noise, call the model, return the (multi-scale) loss."""

from dataclasses import dataclass, field

import torch

from dimr.config import dataclass_from_dict
from dimr.diffusion.blurring import resolve_process_config
from dimr.diffusion.cascade import CascadeObjective, resolve_condition_config
from dimr.diffusion.losses import Loss, resolve_loss_config
from dimr.diffusion.noise import build_noise, draw, rand, resolve_noise_config
from dimr.diffusion.parametrization import PREDICTIONS, append_dims, get_prediction
from dimr.diffusion.registry import check_choice, resolve_tagged
from dimr.diffusion.relay import RelayObjective
from dimr.diffusion.schedules import (
    C_NOISE,
    alpha_sigma,
    build_schedule,
    get_c_noise,
    resolve_schedule_config,
)
from dimr.errors import ConfigError

# ----------------------------------------------------------------------------
# Training-time λ distributions.


def _rand(n, generator, device):
    return rand((n,), generator, device)


def logsnr_uniform_time(n, schedule, generator=None, device=None):
    """λ = λ(t), t ~ U(0, 1): the schedule defines the λ distribution (DDPM, DiMR, simple diffusion)."""
    return schedule.logsnr(_rand(n, generator, device))


def logsnr_edm_lognormal(n, schedule, generator=None, device=None, p_mean=-1.2, p_std=1.2):
    """ln σ_edm ~ N(P_mean, P_std²), λ = −2 ln σ_edm (EDM Table 1; Relay Diffusion §4)."""
    z = draw(torch.randn, (n,), generator, device, torch.float64)
    return -2.0 * (p_mean + p_std * z)


TIME_SAMPLINGS = {"uniform": logsnr_uniform_time, "edm-lognormal": logsnr_edm_lognormal}
TIME_SAMPLING_DEFAULTS = {"uniform": {}, "edm-lognormal": {"p_mean": -1.2, "p_std": 1.2}}


# ----------------------------------------------------------------------------


@dataclass
class DiffusionConfig:
    """The run config's `diffusion` section: everything about the process and the loss."""

    schedule: dict | str = field(default_factory=lambda: {"type": "cosine"})  # λ(t), schedules.SCHEDULES
    noise: dict | str = field(default_factory=lambda: {"type": "gaussian"})   # ε law, noise.NOISES
    prediction: str = "eps"            # network output: eps | v | x0 (parametrization.PREDICTIONS)
    loss: dict | str = field(default_factory=lambda: {"type": "dimr-multiscale"})  # losses.LOSSES + weighting
    c_noise: str = "logsnr/4"          # what the network sees, from λ (schedules.C_NOISE)
    time_sampling: dict | str = field(default_factory=lambda: {"type": "uniform"})  # training λ law
    process: dict | str = field(default_factory=lambda: {"type": "vp"})  # vp | relay-blur (blurring.py)
    # none | low-resolution: a cascade's super-resolution network, which sees the upsampled low-resolution
    # image as extra input channels (cascade.py; Ho et al. 2022 §3)
    condition: dict | str = field(default_factory=lambda: {"type": "none"})

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        """Validated config with every nested default filled in; unknown keys are ConfigErrors."""
        return dataclass_from_dict(cls, d)

    def validate(self, where: str = ""):
        self.schedule = resolve_schedule_config(self.schedule)
        self.noise = resolve_noise_config(self.noise)
        self.prediction = check_choice(self.prediction, PREDICTIONS, "prediction")
        self.loss = resolve_loss_config(self.loss)
        self.c_noise = check_choice(self.c_noise, C_NOISE, "c_noise")
        self.time_sampling = resolve_tagged("time_sampling", self.time_sampling, TIME_SAMPLING_DEFAULTS)
        self.process = resolve_process_config(self.process)
        self.condition = resolve_condition_config(self.condition)
        if self.process["type"] == "relay-blur":
            # The relay process fixes σ(u), the noise, the preconditioning and c_noise itself.
            defaults = DiffusionConfig()
            defaults.validate()
            fixed = ("schedule", "noise", "prediction", "c_noise", "time_sampling")
            unused = {k: getattr(defaults, k) for k in fixed if getattr(self, k) != getattr(defaults, k)}
            if unused:
                raise ConfigError(f"diffusion {list(unused)}: no effect with process relay-blur, which sets "
                                  "its own noise levels, noise and EDM preconditioning; set them to their "
                                  f"defaults {unused} (a recipe may set them) and use the process parameters")
            if self.loss["weighting"]["type"] != "uniform":
                raise ConfigError("diffusion.loss.weighting: process relay-blur uses EDM's weight; set "
                                  f"uniform, got {self.loss['weighting']}")
            if self.condition["type"] != "none":
                raise ConfigError("diffusion.condition: a relay-blur network starts from the stage-1 image "
                                  "instead of seeing it; set condition: none (or process: vp for a cascade)")


def as_diffusion_config(cfg) -> DiffusionConfig:
    return cfg if isinstance(cfg, DiffusionConfig) else DiffusionConfig.from_dict(cfg or {})


def build_objective(cfg):
    """The training objective of a diffusion section: `DiffusionObjective` (process vp) or
    `RelayObjective` (process relay-blur, Relay Diffusion stage 2), inside `CascadeObjective` for a
    low-resolution condition; all `.loss(model, x, y, generator)`."""
    cfg = as_diffusion_config(cfg)
    if cfg.process["type"] == "relay-blur":
        return RelayObjective(cfg.process, cfg.loss)
    if cfg.condition["type"] == "low-resolution":
        return CascadeObjective(DiffusionObjective(cfg), cfg.condition)
    return DiffusionObjective(cfg)


class DiffusionObjective:
    """`loss(model, x, y)`: t (or λ) per sample, then noise, z = α x + σ n, model(z, c_noise, y)."""

    def __init__(self, cfg):
        self.cfg = as_diffusion_config(cfg)
        if self.cfg.process["type"] != "vp":
            raise ConfigError(f"DiffusionObjective trains process vp, got {self.cfg.process['type']!r}: "
                              "use build_objective")
        self.schedule = build_schedule(self.cfg.schedule)
        self.noise = build_noise(self.cfg.noise)
        self.prediction = get_prediction(self.cfg.prediction)
        self.loss_fn = Loss(self.cfg.loss)
        self._c_noise = get_c_noise(self.cfg.c_noise)
        ts = dict(self.cfg.time_sampling)
        self._sample_logsnr, self._ts_params = TIME_SAMPLINGS[ts.pop("type")], ts

    def c_noise(self, lam):
        """The network's conditioning scalar for log-SNR λ."""
        return self._c_noise(lam, self.schedule)

    def sample_logsnr(self, n, generator=None, device=None):
        """(n,) float64 training log-SNRs."""
        return self._sample_logsnr(n, self.schedule, generator, device, **self._ts_params)

    def loss(self, model, x, y, generator=None):
        """(batch-mean loss, {"loss": …, "loss/scale<r>": …}); λ is drawn before the noise."""
        n, c = x.shape[:2]
        lam = self.sample_logsnr(n, generator, x.device)                   # (N,) float64
        alpha, sigma = (append_dims(v.to(x.dtype), x.ndim) for v in alpha_sigma(lam))
        noise = self.noise.sample(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = alpha * x + sigma * noise                                       # (N, C, H, W)
        preds = model(z, self.c_noise(lam).to(torch.float32), y)
        if isinstance(preds, torch.Tensor):
            preds = [preds]
        # Learned variance (DiT): 2C channels, the first C are the mean; no VLB term is trained here.
        preds = [p[:, :c].float() for p in preds]
        target = self.prediction.target(x, noise, alpha, sigma).float()
        f = self.prediction.eps_space_factor(alpha.flatten(), sigma.flatten())
        w = (self.loss_fn.weight(lam) * f).float()                          # (N,)
        return self.loss_fn.total(preds, target, w)
