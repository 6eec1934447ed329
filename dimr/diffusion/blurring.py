"""Relay Diffusion's patch-wise blurring forward process (Teng et al. 2023, §3.3).

Inside each s×s patch the image is taken to the orthonormal 2-D DCT-II, frequency (i, j) is
attenuated by d_ij = (1 − m)·exp(−π²(i² + j²)/s² · σ_B²/2) + m, and transformed back; σ_B(u) =
σ_B,max·sin²(πu/2) grows with the relay time u ∈ [0, 1]. The stage-2 forward process is
x_u = Blur(x0, σ_B(u)) + σ(u)·n, with σ(u) = exp(P_mean + P_std·Φ⁻¹(u·L)) and n mixed block noise.
The DCT is a product with a precomputed s×s matrix; blur is diagonal in that basis, so a patch's
DC coefficient (s × its mean) is kept exactly and, at large σ_B, every other one is scaled by m:
the blurred image tends to the nearest-upsampled low-resolution image, where stage 1 hands over.
"""

import math

import torch

from dimr.diffusion.noise import BlockNoise, GaussianNoise, rand
from dimr.diffusion.registry import resolve_tagged
from dimr.errors import ConfigError

# ----------------------------------------------------------------------------
# Patch-wise DCT and the blurring operator.


def dct_matrix(s: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(s, s) orthonormal DCT-II: C[k, n] = c_k·cos(π(2n + 1)k/(2s)), c_0 = √(1/s), c_k = √(2/s)."""
    k = torch.arange(s, dtype=torch.float64)[:, None]
    n = torch.arange(s, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * n + 1) * k / (2 * s)) * math.sqrt(2 / s)
    c[0] /= math.sqrt(2)
    return c.to(dtype=dtype, device=device)  # built in float64, then cast


def _patches(x, s):
    *lead, h, w = x.shape
    if h % s or w % s:
        raise ValueError(f"image size {h}×{w} is not a multiple of the patch size {s}")
    return x.reshape(*lead, h // s, s, w // s, s)                                   # (…, H/s, s, W/s, s)


def dct2(x: torch.Tensor, s: int) -> torch.Tensor:
    """Patch-wise orthonormal 2-D DCT-II of (…, H, W); patch (p, q)'s (i, j) lands at (p·s + i, q·s + j)."""
    c = dct_matrix(s, x.dtype, x.device)
    out = torch.einsum("ia,...pavb,jb->...pivj", c, _patches(x, s), c)              # C · P · Cᵀ per patch
    return out.reshape(x.shape)


def idct2(coef: torch.Tensor, s: int) -> torch.Tensor:
    """Inverse of `dct2` (Cᵀ · X · C per patch: C is orthonormal)."""
    c = dct_matrix(s, coef.dtype, coef.device)
    out = torch.einsum("ia,...pivj,jb->...pavb", c, _patches(coef, s), c)
    return out.reshape(coef.shape)


def blur_coefficients(sigma_b, s: int, m: float = 0.001) -> torch.Tensor:
    """(…, s, s) float64 d_ij = (1 − m)·exp(−π²(i² + j²)/s² · σ_B²/2) + m for σ_B of shape (…)
    (Relay Diffusion §3.3; the official blurring.py `get_alpha_t` / training/loss.py `DCTBlur`)."""
    sigma_b = torch.as_tensor(sigma_b, dtype=torch.float64)
    f = torch.arange(s, dtype=torch.float64, device=sigma_b.device) * math.pi / s
    freq2 = f[:, None] ** 2 + f[None, :] ** 2                                       # (s, s) π²(i²+j²)/s²
    t = (sigma_b**2 / 2)[..., None, None]
    return (1 - m) * torch.exp(-freq2 * t) + m


def scale_coefficients(coef: torch.Tensor, d: torch.Tensor, s: int) -> torch.Tensor:
    """Multiply patch-DCT coefficients (N, C, H, W) by d (s, s) or per sample (N, s, s)."""
    n, _, h, w = coef.shape
    d = d.to(coef.dtype).reshape(-1, 1, 1, s, 1, s)                                 # (N|1, 1, 1, s, 1, s)
    return (_patches(coef, s) * d).reshape(n, -1, h, w)


def blur(x: torch.Tensor, sigma_b, s: int, m: float = 0.001) -> torch.Tensor:
    """Blur(x, σ_B): patch DCT, scale by d_ij(σ_B), inverse DCT; σ_B a scalar or one per sample."""
    d = blur_coefficients(torch.as_tensor(sigma_b, dtype=torch.float64, device=x.device), s, m)
    return idct2(scale_coefficients(dct2(x, s), d, s), s)


def upsample_nearest(x_low: torch.Tensor, s: int) -> torch.Tensor:
    """Nearest upsampling by s (each pixel becomes an s×s patch): where stage 2 starts (official
    generate.py `F.interpolate(images, 256)`); Blur leaves it unchanged (DC coefficients only)."""
    return x_low.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


# ----------------------------------------------------------------------------
# The stage-2 process: config and forward process.

PROCESS_DEFAULTS = {
    "vp": {},  # z = α x + σ ε with the schedule, noise and prediction of the diffusion section
    "relay-blur": {
        "sigma_b_max": 3.0,      # σ_B,max: 3 ImageNet, 2 CelebA-HQ (paper; official --blur-sigma-max)
        "patch": 2,              # s: the upsampling factor of stage 2 (official --up-scale, 4 for 64→256)
        "m": 0.001,              # the floor of d_ij (official `min_scale`)
        "p_mean": -1.2,          # σ = exp(P_mean + P_std·Φ⁻¹(u·L)) (EDM Table 1 log-normal, truncated)
        "p_std": 1.2,
        "truncation": 0.93,      # L (official --prob-length): σ < exp(P_mean + P_std·Φ⁻¹(L)) ≈ 1.77
        "sigma_data": 0.5,       # σ_d of the EDM preconditioning (Karras et al. 2022, Table 1)
        "block_a": 0.15,         # block-noise mixing weight (official --block-scale); 0: white noise
        "block_size": 0,         # 0: the patch size (official BlurLoss `block_size=self.up_scale`)
        "block_normalize": True,  # paper: n = (ε + a·Block(ε′))/√(1+a²); official: False (no 1/√(1+a²))
        "truncate_sigma": 0.0,   # paper: none; official BlurLoss: 7.5e-3 (its clamp u ≥ Φ(·)·L, kept as is)
        "weight_max": 0.0,       # paper: none (0); official BlurLoss: `weight.clamp(max=100000)`
    },
}


def resolve_process_config(cfg) -> dict:
    """{"type": "vp"} or the relay-blur parameters with defaults filled in; bad values are ConfigErrors."""
    out = resolve_tagged("process", cfg, PROCESS_DEFAULTS)
    if out["type"] != "relay-blur":
        return out
    checks = {"patch": out["patch"] >= 2, "sigma_b_max": out["sigma_b_max"] >= 0, "m": 0 <= out["m"] < 1,
              "p_std": out["p_std"] > 0, "truncation": 0 < out["truncation"] <= 1,
              "sigma_data": out["sigma_data"] > 0, "block_a": out["block_a"] >= 0,
              "block_size": out["block_size"] >= 0, "truncate_sigma": out["truncate_sigma"] >= 0,
              "weight_max": out["weight_max"] >= 0}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ConfigError(f"process relay-blur: invalid {bad} in {out} (need patch >= 2, sigma_b_max >= 0, "
                          "0 <= m < 1, p_std > 0, 0 < truncation <= 1, sigma_data > 0, and block_a, "
                          "block_size, truncate_sigma, weight_max >= 0)")
    return out


class RelayProcess:
    """x_u = Blur(x0, σ_B(u)) + σ(u)·n: the stage-2 blurring forward process (Relay Diffusion §3.3)."""

    def __init__(self, cfg):
        cfg = resolve_process_config(cfg)
        if cfg["type"] != "relay-blur":
            raise ConfigError(f"RelayProcess needs process type 'relay-blur', got {cfg['type']!r}")
        self.cfg = cfg
        self.s, self.m, self.sigma_data = cfg["patch"], cfg["m"], cfg["sigma_data"]
        if cfg["block_a"] > 0:
            self.noise = BlockNoise(cfg["block_a"], cfg["block_size"] or self.s, cfg["block_normalize"])
        else:
            self.noise = GaussianNoise()

    def sigma_b(self, u):
        """σ_B(u) = σ_B,max·sin²(πu/2) (§3.3; official BlurLoss `blur_sigmas`)."""
        return self.cfg["sigma_b_max"] * torch.sin(torch.as_tensor(u, dtype=torch.float64) * math.pi / 2) ** 2

    def sigma(self, u):
        """σ(u) = exp(P_mean + P_std·Φ⁻¹(u·L)) (official BlurLoss `rnd_interval_normal`)."""
        c = self.cfg
        u = torch.as_tensor(u, dtype=torch.float64)
        return torch.exp(c["p_mean"] + c["p_std"] * torch.special.ndtri(u * c["truncation"]))

    def u_of_sigma(self, sigma):
        """u(σ) = Φ((ln σ − P_mean)/P_std)/L, the inverse of `sigma` (official blurring.py `get_alpha_t`)."""
        c = self.cfg
        z = (torch.as_tensor(sigma, dtype=torch.float64).log() - c["p_mean"]) / c["p_std"]
        return torch.special.ndtr(z) / c["truncation"]

    def sigma_max(self) -> float:
        """The largest training σ, σ(1) = exp(P_mean + P_std·Φ⁻¹(L))."""
        return float(self.sigma(1.0))

    def d(self, sigma):
        """d_ij at noise level σ (blur time u(σ)): (…, s, s) float64."""
        return blur_coefficients(self.sigma_b(self.u_of_sigma(sigma)), self.s, self.m)

    def sample_u(self, n, generator=None, device=None):
        """(n,) float64 u ~ U(0, 1), and with `truncate_sigma` the official clamp u ≥ Φ(z)·L (z the
        normal score of ln truncate_sigma; BlurLoss multiplies by L where u(σ) divides, so its floor
        is σ ≈ 7.1e-3 for 7.5e-3)."""
        u = rand((n,), generator, device)
        if self.cfg["truncate_sigma"] > 0:
            c = self.cfg
            z = (math.log(c["truncate_sigma"]) - c["p_mean"]) / c["p_std"]
            u = u.clamp(min=0.5 * math.erfc(-z / math.sqrt(2)) * c["truncation"])
        return u

    def mean(self, x0, u):
        """The noise-free part Blur(x0, σ_B(u)), u one per sample (N,)."""
        return blur(x0, self.sigma_b(u).to(x0.device), self.s, self.m).to(x0.dtype)

    def forward(self, x0, u, noise):
        """x_u = Blur(x0, σ_B(u)) + σ(u)·noise, with `noise` drawn from `self.noise`."""
        sigma = self.sigma(u).to(device=x0.device, dtype=x0.dtype).reshape(-1, 1, 1, 1)
        return self.mean(x0, u) + sigma * noise
