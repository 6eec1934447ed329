"""ODE/SDE samplers in log-SNR, all with one signature (k-diffusion style).

`sampler(denoise, x, logsnrs, generator=None, **kw) -> x` where `denoise(z, λ) -> x̂0` and
`logsnrs` is increasing (noisiest first). The last entry is normally +inf (clean data), so the
final step returns x̂0, as k-diffusion appends σ = 0. VP notation: α² = sigmoid(λ), σ² = sigmoid(−λ);
DPM-Solver's half-log-SNR is λ/2, EDM's σ is e^{−λ/2} on x/α.
"""

import math
from dataclasses import dataclass, field

import torch

from dimr.config import dataclass_from_dict
from dimr.diffusion.denoiser import Denoiser, GuidanceConfig
from dimr.diffusion.noise import randn
from dimr.diffusion.registry import check_choice
from dimr.errors import ConfigError


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _alpha_sigma(lam: float):
    """(α, σ) as Python floats (float64 coefficients); λ = +inf is clean data."""
    if lam == math.inf:
        return 1.0, 0.0
    return math.sqrt(_sigmoid(lam)), math.sqrt(_sigmoid(-lam))


def _as_list(logsnrs):
    lams = [float(v) for v in torch.as_tensor(logsnrs, dtype=torch.float64).flatten()]
    if len(lams) < 2 or any(b <= a for a, b in zip(lams, lams[1:])):
        raise ValueError(f"logsnrs must be strictly increasing (noisiest first), >= 2 entries: {lams}")
    return lams


# ----------------------------------------------------------------------------
# Samplers.


@torch.no_grad()
def sample_ddim(denoise, x, logsnrs, generator=None, eta=0.0):
    """DDIM (Song et al. 2021, Eq. 12); eta = 0 deterministic, eta = 1 the DDPM posterior variance."""
    lams = _as_list(logsnrs)
    for lam_s, lam_t in zip(lams[:-1], lams[1:]):
        (a_s, s_s), (a_t, s_t) = _alpha_sigma(lam_s), _alpha_sigma(lam_t)
        x0 = denoise(x, lam_s)
        eps = (x - a_s * x0) / s_s
        c = eta * (s_t / s_s) * math.sqrt(max(0.0, 1 - (a_s / a_t) ** 2))  # Eq. 16's σ_τ
        x = a_t * x0 + math.sqrt(max(0.0, s_t**2 - c**2)) * eps
        if c > 0:
            x = x + c * randn(x.shape, generator, x.device, x.dtype)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise, x, logsnrs, generator=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, data prediction, in λ/2."""
    lams = _as_list(logsnrs)
    x0_prev, lam_prev = None, None
    for lam_s, lam_t in zip(lams[:-1], lams[1:]):
        s_s, (a_t, s_t) = _alpha_sigma(lam_s)[1], _alpha_sigma(lam_t)
        x0 = denoise(x, lam_s)
        h = (lam_t - lam_s) / 2
        if x0_prev is None or lam_t == math.inf:
            d = x0  # first step, and the last step to clean data, are first order
        else:
            r = (lam_s - lam_prev) / 2 / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (s_t / s_s) * x - a_t * math.expm1(-h) * d
        x0_prev, lam_prev = x0, lam_s
    return x


@torch.no_grad()
def sample_heun(denoise, x, logsnrs, generator=None):
    """Heun's 2nd-order method (EDM, Karras et al. 2022, Algorithm 1) in σ = e^{−λ/2} on x/α."""
    lams = _as_list(logsnrs)
    sig = [math.exp(-lam / 2) for lam in lams]  # +inf -> 0

    def d_edm(xt, lam):  # EDM's D(x; σ) through the VP denoiser: z = α·x̃
        return denoise(_alpha_sigma(lam)[0] * xt, lam)

    xt = x / _alpha_sigma(lams[0])[0]
    for i in range(len(lams) - 1):
        d = (xt - d_edm(xt, lams[i])) / sig[i]
        x_next = xt + (sig[i + 1] - sig[i]) * d
        if sig[i + 1] > 0:  # second-order correction (Alg. 1 lines 9-11)
            d2 = (x_next - d_edm(x_next, lams[i + 1])) / sig[i + 1]
            x_next = xt + (sig[i + 1] - sig[i]) * (d + d2) / 2
        xt = x_next
    return _alpha_sigma(lams[-1])[0] * xt


SAMPLERS = {"ddim": sample_ddim, "dpmpp-2m": sample_dpmpp_2m, "heun": sample_heun}
SAMPLER_OPTIONS = {"ddim": ("eta",), "dpmpp-2m": (), "heun": ()}


# ----------------------------------------------------------------------------
# Step spacings: `steps` noise levels from the schedule's noisiest to its cleanest, then +inf.


def spacing_time_uniform(schedule, steps):
    """t uniform from 1 to 0 (DDIM / DPM-Solver `time_uniform`)."""
    return schedule.logsnr(torch.linspace(1, 0, steps, dtype=torch.float64))


def spacing_logsnr_uniform(schedule, steps):
    """λ uniform (DPM-Solver `logSNR`)."""
    return torch.linspace(schedule.logsnr_min, schedule.logsnr_max, steps, dtype=torch.float64)


def spacing_karras(schedule, steps, rho=7.0):
    """σ_edm^{1/ρ} uniform, ρ = 7 (EDM Eq. 5)."""
    s_max, s_min = math.exp(-schedule.logsnr_min / 2), math.exp(-schedule.logsnr_max / 2)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return -2 * sigmas.log()


SPACINGS = {"time-uniform": spacing_time_uniform, "logsnr-uniform": spacing_logsnr_uniform,
            "karras": spacing_karras}


def get_logsnrs(schedule, steps: int, spacing: str = "logsnr-uniform") -> torch.Tensor:
    """(steps + 1,) float64 log-SNRs, noisiest first, ending with +inf: `steps` denoiser levels."""
    check_choice(spacing, SPACINGS, "spacing")
    lams = SPACINGS[spacing](schedule, steps).to(torch.float64)
    return torch.cat([lams, torch.tensor([math.inf], dtype=torch.float64)])


def sample(denoise, noise, schedule, steps, sampler="dpmpp-2m", spacing="logsnr-uniform", generator=None,
           **kw):
    """Run `sampler` from x = σ_0·noise (the prior at the noisiest level) to clean data."""
    check_choice(sampler, SAMPLERS, "sampler")
    logsnrs = get_logsnrs(schedule, steps, spacing)
    x = _alpha_sigma(float(logsnrs[0]))[1] * noise.float()
    return SAMPLERS[sampler](denoise, x, logsnrs, generator=generator, **kw)


@dataclass
class SamplerConfig:
    """How `dimr sample` integrates: solver, steps, spacing and guidance."""

    sampler: str = "dpmpp-2m"           # SAMPLERS key
    steps: int = 50                     # denoiser levels (Heun: 2·steps − 1 evaluations)
    spacing: str = "logsnr-uniform"     # SPACINGS key (DPM-Solver's choice for pixel space)
    eta: float = 0.0                    # DDIM noise (0: deterministic); ddim only
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    @classmethod
    def from_dict(cls, d) -> "SamplerConfig":
        return dataclass_from_dict(cls, d if d is not None else {})

    def validate(self, where: str = ""):
        check_choice(self.sampler, SAMPLERS, "sampler")
        check_choice(self.spacing, SPACINGS, "spacing")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"sampler steps: expected a positive integer, got {self.steps!r}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 0 <= self.eta <= 1:
            raise ConfigError(f"sampler eta: expected a number in [0, 1], got {self.eta!r}")
        self.eta = float(self.eta)
        if self.eta and "eta" not in SAMPLER_OPTIONS[self.sampler]:
            raise ConfigError(f"sampler {self.sampler} is deterministic: eta applies to ddim only; "
                              "set eta: 0 or sampler: ddim")
        self.guidance = GuidanceConfig.from_dict(self.guidance)

    def network_evaluations(self) -> int:
        """Forward passes per image (NFE): Heun corrects every step but the last; guidance doubles each."""
        nfe = 2 * self.steps - 1 if self.sampler == "heun" else self.steps
        return nfe * (2 if self.guidance.scale else 1)

    def sampler_kwargs(self) -> dict:
        """The options this sampler takes (`eta` for ddim)."""
        return {k: getattr(self, k) for k in SAMPLER_OPTIONS[self.sampler]}


def sample_from_noise(model, diffusion_cfg, sampler_cfg, noise, y, generator=None):
    """Clean samples (float32) from `noise` (N, C, H, W) and labels `y`: the run's sampler and guidance."""
    cfg = sampler_cfg if isinstance(sampler_cfg, SamplerConfig) else SamplerConfig.from_dict(sampler_cfg)
    denoiser = Denoiser(model, diffusion_cfg, cfg.guidance)
    return sample(lambda z, lam: denoiser(z, lam, y), noise, denoiser.schedule, cfg.steps, cfg.sampler,
                  cfg.spacing, generator=generator, **cfg.sampler_kwargs())
