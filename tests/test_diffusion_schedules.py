"""Schedules λ(t), their inverses, α/σ, and the c_noise mappings (VDM §3; EDM Table 1)."""

import math

import numpy as np
import pytest
import torch

from dimr.diffusion import C_NOISE, SCHEDULES, alpha_sigma, build_schedule, get_c_noise
from dimr.errors import ConfigError

# Every registered schedule, with the parameters the required ones need.
CONFIGS = [{"type": n, **({"resolution": 256} if n.startswith("cosine-") else {})} for n in SCHEDULES]
T = torch.linspace(0, 1, 2001, dtype=torch.float64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["type"])
def test_alpha_squared_plus_sigma_squared_is_one(cfg):
    alpha, sigma = alpha_sigma(build_schedule(cfg).logsnr(T))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(T), rtol=0, atol=1e-12)
    lam = build_schedule(cfg).logsnr(T)
    torch.testing.assert_close((alpha**2 / sigma**2).log(), lam, rtol=0, atol=1e-8)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["type"])
def test_logsnr_strictly_decreasing_and_inverse(cfg):
    sched = build_schedule(cfg)
    lam = sched.logsnr(T)
    assert (lam[1:] < lam[:-1]).all()
    torch.testing.assert_close(sched.t_of_logsnr(lam), T, rtol=0, atol=1e-9)
    # and the other way round, on the schedule's λ range; out of range clamps to [0, 1]
    lams = torch.linspace(sched.logsnr_min, sched.logsnr_max, 101, dtype=torch.float64)
    torch.testing.assert_close(sched.logsnr(sched.t_of_logsnr(lams)), lams, rtol=0, atol=1e-8)
    assert sched.t_of_logsnr(torch.tensor([math.inf, -1e3], dtype=torch.float64)).tolist() == [0.0, 1.0]


def test_dtype_follows_input():
    sched = build_schedule({"type": "cosine"})
    assert sched.logsnr(torch.rand(3)).dtype == torch.float32
    assert sched.logsnr(0.5).dtype == torch.float64


def test_cosine_clipped_to_fifteen():
    lam = build_schedule({"type": "cosine"}).logsnr(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(lam, torch.tensor([15.0, 0.0, -15.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_cosine_shifted_offset_at_256_base_64():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    shifted = build_schedule({"type": "cosine-shifted", "base": 64, "resolution": 256}).logsnr(t)
    offset = shifted - build_schedule({"type": "cosine"}).logsnr(t)
    assert torch.allclose(offset, offset[0].expand_as(offset), atol=1e-12)
    assert round(offset[0].item(), 3) == -2.773


def test_interpolated_endpoints_and_eq6_literal_switch():
    d, lo, hi = 512, 32, 256
    shift = {b: build_schedule({"type": "cosine-shifted", "base": b, "resolution": d}) for b in (lo, hi)}
    code = build_schedule({"type": "cosine-interpolated", "resolution": d, "d_low": lo, "d_high": hi})
    eq6 = build_schedule({"type": "cosine-interpolated", "resolution": d, "d_low": lo, "d_high": hi,
                          "eq6_literal": True})
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # Public code: the noisy end (t = 1) uses the low base, the clean end the high base.
    at = {b: shift[b].logsnr(ends) for b in (lo, hi)}
    torch.testing.assert_close(code.logsnr(ends), torch.stack([at[hi][0], at[lo][1]]))
    torch.testing.assert_close(eq6.logsnr(ends), torch.stack([at[lo][0], at[hi][1]]))
    mid = torch.tensor(0.3, dtype=torch.float64)
    expected = mid * shift[lo].logsnr(mid) + (1 - mid) * shift[hi].logsnr(mid)
    torch.testing.assert_close(code.logsnr(mid), expected)
    assert abs(code.logsnr(mid) - eq6.logsnr(mid)) > 0.5


@pytest.mark.parametrize("name,betas", [
    ("ddpm-linear", np.linspace(1e-4, 0.02, 1000)),
    ("ddpm-scaled-linear", np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2),
])
def test_ddpm_schedules_match_beta_cumprod(name, betas):
    abar = np.cumprod(1 - betas)  # ᾱ_n, n = 1..1000
    sched = build_schedule({"type": name})
    n = np.array([1, 2, 10, 250, 500, 999, 1000])
    alpha, _ = alpha_sigma(sched.logsnr(torch.tensor(n / 1000.0, dtype=torch.float64)))
    np.testing.assert_allclose(alpha.numpy() ** 2, abar[n - 1], rtol=1e-10)
    # λ is linear between the nodes
    lam_nodes = np.log(abar / (1 - abar))
    mid = sched.logsnr(torch.tensor(500.25 / 1000, dtype=torch.float64)).item()
    assert mid == pytest.approx(0.75 * lam_nodes[499] + 0.25 * lam_nodes[500], abs=1e-10)


def test_vp_continuous_matches_closed_form():
    sched = build_schedule({"type": "vp-continuous"})
    for t in (0.1, 0.5, 1.0):
        s = 1e-5 + t * (1 - 1e-5)
        abar = math.exp(-(0.1 * s + 0.5 * (20 - 0.1) * s**2))
        assert sched.logsnr(t).item() == pytest.approx(math.log(abar / (1 - abar)), rel=1e-10)


def test_config_errors_name_the_choices():
    with pytest.raises(ConfigError, match="cosine-shifted"):
        build_schedule({"type": "cosin"})
    with pytest.raises(ConfigError, match="valid parameters: .*resolution"):
        build_schedule({"type": "cosine-shifted", "resolution": 64, "bse": 32})
    with pytest.raises(ConfigError, match="resolution.*required"):
        build_schedule({"type": "cosine-shifted"})
    with pytest.raises(ConfigError, match="true/false"):
        build_schedule({"type": "cosine-interpolated", "resolution": 64, "eq6_literal": 1})
    with pytest.raises(ConfigError, match="not strictly decreasing"):  # a 1000× base ratio breaks Eq. 6
        build_schedule({"type": "cosine-interpolated", "resolution": 64, "d_low": 1, "d_high": 1000,
                        "eq6_literal": True})
    with pytest.raises(ConfigError, match="logsnr/4"):
        get_c_noise("log_snr")


def test_c_noise_mappings():
    lam = torch.tensor([-4.0, 0.0, 8.0], dtype=torch.float64)
    cos = build_schedule({"type": "cosine"})
    torch.testing.assert_close(C_NOISE["logsnr/4"](lam, cos), lam / 4)
    torch.testing.assert_close(C_NOISE["edm"](lam, cos), torch.log(torch.exp(-lam / 2)) / 4)
    # DiMR latent code: log_snr proxy 8n/1000 − 4 at DDPM step n, fed as proxy/4.
    sl = build_schedule({"type": "ddpm-scaled-linear"})
    n = torch.tensor([1.0, 500.0, 1000.0], dtype=torch.float64)
    c = C_NOISE["dimr-latent-proxy"](sl.logsnr(n / 1000), sl)
    torch.testing.assert_close(c, (8 * n / 1000 - 4) / 4, rtol=0, atol=1e-9)
