"""Noise schedules as log-SNR functions λ(t), t ∈ [0, 1] with t = 1 the noisiest (Kingma et al. 2021, VDM §3).

Every schedule is a plain function `logsnr_<name>(t, **params)`; `SCHEDULES` maps config names
to them and `build_schedule({"type": name, **params})` wraps one in a `Schedule` that also knows
its inverse. The VP process is z = α x + σ ε with α² = sigmoid(λ), σ² = sigmoid(−λ).
"""

import inspect
import math
from functools import partial

import torch

from dimr.errors import ConfigError

COSINE_LOGSNR_RANGE = (-15.0, 15.0)  # simple diffusion's clip of the cosine schedule


def _f64(t):
    return torch.as_tensor(t, dtype=torch.float64)


def alpha_sigma(lam):
    """(α, σ) of the VP process at log-SNR λ: α² = sigmoid(λ), σ² = sigmoid(−λ); λ = +inf is clean."""
    if not (isinstance(lam, torch.Tensor) and lam.is_floating_point()):
        lam = torch.as_tensor(lam, dtype=torch.float64)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


# ----------------------------------------------------------------------------
# Continuous schedules (closed-form λ(t) and t(λ)).


def _cosine_angles(logsnr_min=COSINE_LOGSNR_RANGE[0], logsnr_max=COSINE_LOGSNR_RANGE[1]):
    # λ = −2 log tan(u): u_min = atan(e^{−λmax/2}) gives λmax, u_max = atan(e^{−λmin/2}) gives λmin.
    return math.atan(math.exp(-0.5 * logsnr_max)), math.atan(math.exp(-0.5 * logsnr_min))


def logsnr_cosine(t):
    """Cosine λ(t) = −2 log tan(π t/2) clipped to [−15, 15] (Nichol & Dhariwal 2021; simple diffusion)."""
    u_min, u_max = _cosine_angles()
    return -2.0 * torch.tan(u_min + _f64(t) * (u_max - u_min)).log()


def t_cosine(lam):
    """Inverse of `logsnr_cosine`."""
    u_min, u_max = _cosine_angles()
    return (torch.atan(torch.exp(-0.5 * _f64(lam))) - u_min) / (u_max - u_min)


def logsnr_cosine_shifted(t, base=64, resolution=None):
    """Shifted cosine λ(t) + 2 log(b/d) (simple diffusion Eq. 5); d=256, b=64 shifts by −2.773."""
    return logsnr_cosine(t) + 2.0 * math.log(base / resolution)


def t_cosine_shifted(lam, base=64, resolution=None):
    """Inverse of `logsnr_cosine_shifted`."""
    return t_cosine(_f64(lam) - 2.0 * math.log(base / resolution))


def logsnr_cosine_interpolated(t, resolution=None, d_low=32, d_high=256, eq6_literal=False):
    """Interpolated cosine (simple diffusion Eq. 6): t·λ_shift(d_low) + (1−t)·λ_shift(d_high).

    The public code puts the low base at the noisy end (t = 1); the printed Eq. 6 swaps the two
    (`eq6_literal=True`).
    """
    t = _f64(t)
    noisy_base, clean_base = (d_high, d_low) if eq6_literal else (d_low, d_high)
    return (t * logsnr_cosine_shifted(t, noisy_base, resolution)
            + (1 - t) * logsnr_cosine_shifted(t, clean_base, resolution))


def logsnr_vp_continuous(t, beta_min=0.1, beta_max=20.0, t_min=1e-5):
    """Continuous VP-SDE (Song et al. 2021): log ᾱ(t) = −(β_min t + ½(β_max−β_min) t²).

    λ(t=0) is +inf, so t ∈ [0, 1] is mapped linearly onto [t_min, 1] (score_sde / U-ViT eps = 1e-5),
    as the cosine schedule maps t onto its clipped angle range.
    """
    s = t_min + _f64(t) * (1 - t_min)
    return -torch.special.expm1(beta_min * s + 0.5 * (beta_max - beta_min) * s**2).log()


def t_vp_continuous(lam, beta_min=0.1, beta_max=20.0, t_min=1e-5):
    """Inverse of `logsnr_vp_continuous`: solve ½Δ s² + β_min s = log(1 + e^{−λ}) for s."""
    b = torch.nn.functional.softplus(-_f64(lam))
    d = beta_max - beta_min
    s = 2 * b / (beta_min + torch.sqrt(beta_min**2 + 2 * d * b))  # stable root of the quadratic
    return (s - t_min) / (1 - t_min)


# ----------------------------------------------------------------------------
# Discrete DDPM schedules: λ at t = n/1000 (n = 1..1000), linear in between.


def ddpm_logsnrs(betas: torch.Tensor) -> torch.Tensor:
    """λ_n = log(ᾱ_n / (1 − ᾱ_n)) with ᾱ_n = Π_{i≤n} (1 − β_i) (Ho et al. 2020)."""
    log_abar = torch.cumsum(torch.log1p(-betas.double()), 0)
    return log_abar - torch.log(-torch.expm1(log_abar))


def _betas(kind, num_steps):
    if kind == "linear":  # DDPM / DiT / ADM
        return torch.linspace(1e-4, 0.02, num_steps, dtype=torch.float64)
    # Stable Diffusion "scaled_linear", the DiMR latent schedule.
    return torch.linspace(0.00085**0.5, 0.012**0.5, num_steps, dtype=torch.float64) ** 2


def logsnr_ddpm(t, kind="linear", num_steps=1000):
    """Discrete DDPM schedule as λ(t): node n at t = n/num_steps, linear interpolation in t.

    Below the first node λ continues the first segment's slope: DDPM has no step between x_1 and
    the data, and this keeps λ strictly monotone (so invertible) on all of [0, 1].
    """
    t = _f64(t)
    lams = ddpm_logsnrs(_betas(kind, num_steps)).to(t.device)
    pos = (t * num_steps - 1).clamp(min=-1.0, max=num_steps - 1.0)  # fractional node index
    i = pos.floor().clamp(0, num_steps - 2).long()
    frac = pos - i
    return lams[i] + frac * (lams[i + 1] - lams[i])


# ----------------------------------------------------------------------------
# Schedule object and registry.


def _bisect_t(logsnr_fn, lam, iters=64):
    """t with logsnr_fn(t) = λ for a decreasing λ(t); clamps to [0, 1] outside the range."""
    lam = _f64(lam)
    lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = logsnr_fn(mid) > lam  # λ too large -> t too small
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    t = 0.5 * (lo + hi)
    t = torch.where(lam >= logsnr_fn(torch.zeros_like(lam)), 0.0, t)  # exact ends outside the range
    return torch.where(lam <= logsnr_fn(torch.ones_like(lam)), 1.0, t)


class Schedule:
    """A named λ(t) with its inverse; computations in float64, results in the input's float dtype."""

    def __init__(self, name, params, logsnr_fn, t_fn=None):
        self.name, self.params = name, dict(params)
        self._logsnr = partial(logsnr_fn, **params)
        self._t = partial(t_fn, **params) if t_fn is not None else partial(_bisect_t, self._logsnr)
        grid = self._logsnr(torch.linspace(0, 1, 1001, dtype=torch.float64))
        if not (grid[1:] < grid[:-1]).all():
            raise ConfigError(f"schedule {name} {params}: λ(t) is not strictly decreasing on [0, 1]; "
                              "choose parameters that keep more noise at larger t")
        self.logsnr_max, self.logsnr_min = grid[0].item(), grid[-1].item()

    @staticmethod
    def _out_dtype(x):
        return x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64

    def logsnr(self, t):
        """λ(t) for t ∈ [0, 1] (t = 1 noisiest)."""
        return self._logsnr(t).to(self._out_dtype(t))

    def t_of_logsnr(self, lam):
        """t(λ), the inverse of `logsnr`, clamped to [0, 1]; λ = +inf (clean) gives 0."""
        return self._t(lam).clamp(0.0, 1.0).to(self._out_dtype(lam))

    def __repr__(self):
        return f"Schedule({self.name!r}, {self.params})"


# name -> (λ(t), closed-form t(λ) or None for bisection, fixed keyword arguments)
SCHEDULES = {
    "ddpm-linear": (logsnr_ddpm, None, {"kind": "linear", "num_steps": 1000}),
    "ddpm-scaled-linear": (logsnr_ddpm, None, {"kind": "scaled-linear", "num_steps": 1000}),
    "vp-continuous": (logsnr_vp_continuous, t_vp_continuous, {}),
    "cosine": (logsnr_cosine, t_cosine, {}),
    "cosine-shifted": (logsnr_cosine_shifted, t_cosine_shifted, {}),
    "cosine-interpolated": (logsnr_cosine_interpolated, None, {}),
}


def schedule_params(name) -> dict:
    """Configurable parameters of schedule `name` and their defaults (inspect.Parameter.empty if required)."""
    fn, _, fixed = SCHEDULES[name]
    sig = inspect.signature(fn).parameters
    return {k: p.default for k, p in list(sig.items())[1:] if k not in fixed}


def resolve_schedule_config(cfg) -> dict:
    """{"type": name, **params} with every default filled in; unknown names/params are ConfigErrors."""
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    if not isinstance(cfg, dict) or cfg.get("type") not in SCHEDULES:
        got = cfg.get("type") if isinstance(cfg, dict) else cfg
        raise ConfigError(f"schedule type {got!r} unknown; valid types: {sorted(SCHEDULES)}")
    params = schedule_params(cfg["type"])
    given = {k: v for k, v in cfg.items() if k != "type"}
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ConfigError(f"schedule {cfg['type']}: unknown parameter(s) {unknown}; "
                          f"valid parameters: {sorted(params)}")
    out = {"type": cfg["type"]}
    for k, default in params.items():
        value = given.get(k, default)
        if value is None or value is inspect.Parameter.empty:
            raise ConfigError(f"schedule {cfg['type']}: parameter {k!r} is required "
                              f"(e.g. the image resolution d in pixels)")
        if isinstance(default, bool) or k == "eq6_literal":
            if not isinstance(value, bool):
                raise ConfigError(f"schedule {cfg['type']}.{k}: expected true/false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"schedule {cfg['type']}.{k}: expected a positive number, got {value!r}")
        out[k] = value
    return out


def build_schedule(cfg: dict) -> Schedule:
    """Schedule from {"type": name, **params} (see `SCHEDULES`)."""
    cfg = resolve_schedule_config(cfg)
    fn, inv, fixed = SCHEDULES[cfg["type"]]
    params = {**fixed, **{k: v for k, v in cfg.items() if k != "type"}}
    return Schedule(cfg["type"], params, fn, inv)


# ----------------------------------------------------------------------------
# c_noise: the one scalar a network sees, always derived from λ (EDM, Karras et al. 2022, Table 1).


def c_noise_logsnr4(lam, schedule):
    """c = λ/4 (DiMR official code's TD-LN input)."""
    return lam / 4


def c_noise_edm(lam, schedule):
    """c = ln(σ_edm)/4 = −λ/8 with σ_edm = σ/α (EDM Table 1, c_noise = ¼ ln σ)."""
    return -lam / 8


def c_noise_time(lam, schedule):
    """c = t(λ) under the run's schedule, in [0, 1]."""
    return schedule.t_of_logsnr(lam)


def c_noise_dimr_latent_proxy(lam, schedule):
    """c = (8n/1000 − 4)/4, n = 1000·t(λ): the linear log-SNR proxy of the official DiMR train.py, eval.py."""
    return (8 * schedule.t_of_logsnr(lam) - 4) / 4


C_NOISE = {
    "logsnr/4": c_noise_logsnr4,
    "edm": c_noise_edm,
    "time": c_noise_time,
    "dimr-latent-proxy": c_noise_dimr_latent_proxy,
}


def get_c_noise(name):
    """The c_noise mapping `name` from `C_NOISE`."""
    if name not in C_NOISE:
        raise ConfigError(f"c_noise {name!r} unknown; valid mappings: {sorted(C_NOISE)}")
    return C_NOISE[name]
