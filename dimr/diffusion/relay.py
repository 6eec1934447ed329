"""Relay Diffusion stage 2 (Teng et al. 2023): EDM preconditioning, the blurring loss and sampler.

The network sees c_in·x_u and c_noise = ln(σ)/4 and is preconditioned as EDM (Karras et al. 2022,
Table 1) on its noisy, blurred input: D(x_u; σ) = c_skip·x_u + c_out·F (official training/networks.py
`EDMPrecond`, used by `--precond=blur`). The loss is λ(σ)‖D − x0‖² with λ = (σ² + σ_d²)/(σ·σ_d)²,
which equals ‖F − (x0 − c_skip·x_u)/c_out‖² exactly (λ·c_out² = 1), so per-branch terms are taken
on that F-target. Sampling starts from the nearest-upsampled stage-1 image plus noise at the first
σ of a Karras schedule below 0.9 and runs blurred DDIM with a Heun correction (official generate.py
`blur_sampler`).
"""

import math
from dataclasses import dataclass

import torch

from dimr.config import dataclass_from_dict
from dimr.diffusion.blurring import RelayProcess, dct2, idct2, scale_coefficients, upsample_nearest
from dimr.diffusion.losses import Loss
from dimr.diffusion.parametrization import append_dims
from dimr.errors import ConfigError

# ----------------------------------------------------------------------------
# EDM preconditioning (Karras et al. 2022, Table 1).


def edm_precond(sigma, sigma_data=0.5):
    """(c_skip, c_out, c_in, c_noise) (float64): σ_d²/(σ²+σ_d²), σσ_d/√(σ²+σ_d²), 1/√(σ²+σ_d²), ln σ/4."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def edm_loss_weight(sigma, sigma_data=0.5):
    """λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (Karras et al. 2022, Table 1; official BlurLoss `weight`)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


# ----------------------------------------------------------------------------
# Training objective.


class RelayObjective:
    """`loss(model, x, y)`: u per sample, σ(u), x_u = Blur(x0, σ_B(u)) + σ·n, model(c_in·x_u, ln(σ)/4, y).

    `process` is a relay-blur process config; `loss` a `losses.LOSSES` config (uniform weighting:
    the EDM weight is part of the process), applied to the F-targets of every branch.
    """

    def __init__(self, process, loss=None):
        self.process = RelayProcess(process)
        self.loss_fn = Loss(loss if loss is not None else {"type": "dimr-multiscale"})
        if self.loss_fn.cfg["weighting"]["type"] != "uniform":
            raise ConfigError("process relay-blur: the loss weighting is EDM's λ(σ); set loss.weighting to "
                              f"uniform, got {self.loss_fn.cfg['weighting']}")

    def loss(self, model, x, y, generator=None):
        """(batch-mean loss, {"loss": …, "loss/scale<r>": …}); u is drawn before the noise."""
        n, c = x.shape[:2]
        proc = self.process
        u = proc.sample_u(n, generator, x.device)                           # (N,) float64
        sigma = proc.sigma(u)
        noise = proc.noise.sample(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_u = proc.forward(x, u, noise)                                     # (N, C, H, W)
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, proc.sigma_data)
        c_skip, c_out, c_in = (append_dims(v.to(x.dtype), x.ndim) for v in (c_skip, c_out, c_in))
        preds = model(c_in * x_u, c_noise.to(torch.float32), y)
        if isinstance(preds, torch.Tensor):
            preds = [preds]
        preds = [p[:, :c].float() for p in preds]  # learned variance (2C channels): the first C
        target = ((x - c_skip * x_u) / c_out).float()                       # λ‖D − x0‖² = ‖F − target‖²
        w = torch.ones_like(sigma)
        if proc.cfg["weight_max"] > 0:  # official: λ clamped at 1e5, i.e. the F-space weight min(λ, max)/λ
            lam = edm_loss_weight(sigma, proc.sigma_data)
            w = lam.clamp(max=proc.cfg["weight_max"]) / lam
        w = w.float()
        return self.loss_fn.total(preds, target, w)


# ----------------------------------------------------------------------------
# Sampling.


class RelayDenoiser:
    """D(x, σ, y) -> x̂0 (float32): EDM preconditioning of `model(z, c_noise, y) -> [.., full res]`,
    with classifier-free guidance D_c + s·(D_c − D_u) (official `cfg_scale` w = 1 + s)."""

    def __init__(self, model, process, guidance_scale=0.0):
        self.model, self.process, self.guidance_scale = model, RelayProcess(process), float(guidance_scale)

    def _d(self, x, sigma, y):
        c = x.shape[1]
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, self.process.sigma_data)
        c_skip, c_out, c_in = (append_dims(v.float(), x.ndim) for v in (c_skip, c_out, c_in))
        out = self.model(c_in * x, c_noise.float(), y)
        out = (out if isinstance(out, torch.Tensor) else out[-1])[:, :c].float()
        return c_skip * x + c_out * out                                     # (N, C, H, W)

    def __call__(self, x, sigma, y):
        n = x.shape[0]
        x = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(n)  # (N,)
        if self.guidance_scale == 0:
            return self._d(x, sigma, y)
        if y is None:
            raise ValueError("classifier-free guidance needs class labels y; use guidance_scale 0")
        null = torch.full_like(y, self.model.num_classes)  # the null class is the last table entry
        d_c, d_u = self._d(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([y, null])).chunk(2)
        return d_c + self.guidance_scale * (d_c - d_u)


def relay_sigmas(steps=18, sigma_min=0.008, sigma_max=80.0, rho=7.0, truncation_sigma=0.9):
    """(K + 1,) float64: the `steps`-level Karras schedule (EDM Eq. 5) from its first σ below
    `truncation_sigma` on, then 0 (official generate.py `blur_sampler`: σ ∈ [0.008, 80], ρ = 7, 0.9)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sig = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    sig = sig[sig < truncation_sigma]
    if len(sig) == 0:
        raise ValueError(f"no σ of the {steps}-step Karras schedule is below {truncation_sigma}")
    return torch.cat([sig, sig.new_zeros(1)])


@torch.no_grad()
def sample_relay(denoise, x_low_up, sigmas, process, generator=None, eta=0.2, correction="heun"):
    """Blurred DDIM with a Heun correction (official generate.py `blur_sampler`; paper Appendix).

    `denoise(x, σ) -> x̂0`; `x_low_up` the nearest-upsampled stage-1 image; `sigmas` decreasing, ending
    with 0 (`relay_sigmas`). In the patch-DCT basis, with d_σ the blur of u(σ) and γ = √(1−η²)·σ'/σ:
    X' = d_σ'·X̂0 + γ·(X − d_σ·X̂0) + η·σ'·n, n a fresh draw of the process noise; the correction
    averages (X − X̂0)/σ with the same at the predicted X' (`correction="none"`: Euler, one pass per
    level). The last step returns x̂0.
    """
    if correction not in ("heun", "none"):
        raise ValueError(f"correction {correction!r} unknown; valid: ['heun', 'none']")
    proc = process if isinstance(process, RelayProcess) else RelayProcess(process)
    s, sig = proc.s, [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64)]
    if len(sig) < 2 or sig[-1] != 0 or any(b >= a for a, b in zip(sig, sig[1:])):
        raise ValueError(f"sigmas must decrease strictly and end with 0: {sig}")
    if sig[0] > proc.sigma_max():  # u(σ) > 1: beyond the trained blur schedule
        raise ValueError(f"σ₀ = {sig[0]} is above the largest training σ {proc.sigma_max():.4f}")

    def noise():
        return proc.noise.sample(x_low_up.shape, generator=generator, device=x_low_up.device,
                                 dtype=x_low_up.dtype)

    x = x_low_up + sig[0] * noise()  # the relay start (official: x + σ₀·(ε + s_block·Block(ε′)))
    for s_cur, s_next in zip(sig[:-1], sig[1:]):
        x0 = denoise(x, s_cur).to(x.dtype)
        if s_next == 0:
            return x0
        d_cur, d_next = proc.d(s_cur), proc.d(s_next)                       # (s, s) float64
        gamma = math.sqrt(1 - eta**2) * s_next / s_cur
        a = d_next + gamma - gamma * d_cur            # X' = a·X + b·(X − X̂0)/σ: the official form
        b = s_cur * (gamma * d_cur - d_next)
        coef = dct2(x, s)
        slope = (coef - dct2(x0, s)) / s_cur
        x_next = idct2(scale_coefficients(coef, a, s) + scale_coefficients(slope, b, s), s)
        if eta > 0:
            x_next = x_next + eta * s_next * noise()
        if correction == "none":
            x = x_next
            continue
        x0_next = denoise(x_next, s_next).to(x.dtype)  # Heun: the slope at the predicted point
        slope = (slope + (dct2(x_next, s) - dct2(x0_next, s)) / s_next) / 2
        x = idct2(scale_coefficients(coef, a, s) + scale_coefficients(slope, b, s), s)
        if eta > 0:
            x = x + eta * s_next * noise()  # official: a fresh draw, not the predictor's
    return x


# ----------------------------------------------------------------------------
# The sampler config and stage 2 from stage-1 samples.


@dataclass
class RelaySamplerConfig:
    """How stage 2 integrates (official generate.py `blur_sampler` defaults)."""

    steps: int = 18                 # levels of the whole Karras schedule (ImageNet script 200, CelebA-HQ 150)
    sigma_min: float = 0.008
    sigma_max: float = 80.0
    rho: float = 7.0                # ImageNet script: 100
    truncation_sigma: float = 0.9   # start at the first σ below this (CelebA-HQ script: 0.95)
    eta: float = 0.2                # stochasticity (official `s_noise`)
    guidance: float = 0.0           # s of D_c + s·(D_c − D_u); official cfg_scale w = 1 + s (ImageNet 3.5)

    @classmethod
    def from_dict(cls, d) -> "RelaySamplerConfig":
        return dataclass_from_dict(cls, d if d is not None else {})

    def validate(self, where: str = ""):
        for k in ("sigma_min", "sigma_max", "rho", "truncation_sigma", "eta", "guidance"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"relay sampler {k}: expected a number, got {v!r}")
            setattr(self, k, float(v))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"relay sampler steps: expected an integer >= 2, got {self.steps!r}")
        if not (0 < self.sigma_min < self.truncation_sigma and self.rho > 0 and 0 <= self.eta < 1):
            raise ConfigError(f"relay sampler: need 0 < sigma_min < truncation_sigma, rho > 0, 0 <= eta < 1; "
                              f"got {self}")

    def sigmas(self) -> torch.Tensor:
        return relay_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho, self.truncation_sigma)

    def network_evaluations(self) -> int:
        """Forward passes per image (NFE): K levels below the truncation, Heun-corrected but the last
        (2K − 1); guidance doubles each."""
        levels = len(self.sigmas()) - 1
        return (2 * levels - 1) * (2 if self.guidance else 1)


def sample_stage2(model, process, sampler_cfg, x_low, y, generator=None):
    """Stage-2 samples (float32) from stage-1 samples `x_low` (N, C, H/s, W/s) and labels `y`."""
    cfg = (sampler_cfg if isinstance(sampler_cfg, RelaySamplerConfig)
           else RelaySamplerConfig.from_dict(sampler_cfg))
    proc = RelayProcess(process)
    denoiser = RelayDenoiser(model, proc.cfg, cfg.guidance)
    x_up = upsample_nearest(x_low.float(), proc.s)
    return sample_relay(lambda x, sigma: denoiser(x, sigma, y), x_up, cfg.sigmas(), proc, generator, cfg.eta)
