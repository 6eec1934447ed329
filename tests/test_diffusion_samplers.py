"""Samplers against the exact Gaussian denoiser, step spacings, sampler config."""

import math

import pytest
import torch

from dimr.diffusion import (
    SAMPLERS,
    SPACINGS,
    SamplerConfig,
    alpha_sigma,
    build_schedule,
    get_logsnrs,
    sample,
    sample_from_noise,
)
from dimr.errors import ConfigError

# Data x ~ N(μ, s²) per dimension: E[x | z] = μ + α s²/(α² s² + σ²)·(z − α μ) is the exact denoiser,
# and the probability-flow ODE maps N(0, σ_0²) onto N(μ, s²) exactly, so any error is the solver's.
MU, S2 = 0.5, 0.3**2
COSINE = build_schedule({"type": "cosine"})


def gaussian_denoiser(z, lam):
    a, s = (float(v) for v in alpha_sigma(torch.as_tensor(lam, dtype=torch.float64)))
    return MU + a * S2 / (a * a * S2 + s * s) * (z - a * MU)


def _noise(n=2048, d=16):
    # Standardised to zero mean and unit variance: deterministic solvers are affine in the noise
    # here, so the measured moment errors are discretisation errors, free of sampling error.
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    return (x - x.mean()) / x.std()


NOISE = _noise()


def moment_errors(sampler, steps, spacing="logsnr-uniform", **kw):
    out = sample(gaussian_denoiser, NOISE, COSINE, steps, sampler, spacing,
                 generator=torch.Generator().manual_seed(1), **kw)
    return out.mean().item() - MU, out.var().item() / S2 - 1


# Stated tolerances (cosine schedule, λ-uniform steps): |mean error| < 1e-3 and relative
# variance error below `tol` at the given number of steps.
@pytest.mark.parametrize("sampler,steps,tol", [
    ("ddim", 500, 0.02), ("dpmpp-2m", 100, 0.005), ("heun", 100, 0.01)])
def test_samplers_reproduce_gaussian_moments(sampler, steps, tol):
    dm, dv = moment_errors(sampler, steps)
    assert abs(dm) < 1e-3 and abs(dv) < tol, (dm, dv)


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpmpp-2m", 2), ("heun", 2)])
def test_convergence_order(sampler, order):
    # Doubling the steps divides the variance error by 2^order.
    e100, e200 = abs(moment_errors(sampler, 100)[1]), abs(moment_errors(sampler, 200)[1])
    assert math.log2(e100 / e200) == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("steps", [10, 20])
def test_dpmpp_2m_beats_ddim_at_few_steps(steps):
    assert abs(moment_errors("dpmpp-2m", steps)[1]) < abs(moment_errors("ddim", steps)[1]) / 3


def test_stochastic_ddim_converges():
    dm50, dv50 = moment_errors("ddim", 50, eta=1.0)
    dm200, dv200 = moment_errors("ddim", 200, eta=1.0)
    # fresh noise every step: 32768 values give a mean std of 0.0017 and a variance std of ~0.008
    assert abs(dm200) < 0.007 and abs(dv200) < 0.1 and abs(dv200) < abs(dv50) / 2


@pytest.mark.parametrize("spacing", list(SPACINGS))
def test_spacings_run_from_noisiest_to_clean(spacing):
    lams = get_logsnrs(COSINE, 12, spacing)
    assert lams.shape == (13,) and lams[-1] == math.inf and (lams[1:] > lams[:-1]).all()
    assert lams[0].item() == pytest.approx(-15.0) and lams[-2].item() == pytest.approx(15.0)
    assert abs(moment_errors("dpmpp-2m", 200, spacing)[1]) < 0.01


def test_karras_spacing_is_uniform_in_sigma_to_the_one_over_rho():
    sig = torch.exp(-get_logsnrs(COSINE, 8, "karras")[:-1] / 2) ** (1 / 7)
    torch.testing.assert_close(sig[1:] - sig[:-1], (sig[1] - sig[0]).expand(7))


def test_sample_from_noise_runs_the_configured_denoiser():
    class ExactEps(torch.nn.Module):
        """ε-prediction network that is exact for the Gaussian data (sees only c_noise = λ/4)."""
        num_classes = 1

        def forward(self, z, c_noise, y):
            lam = 4 * c_noise.double()[:, None, None, None]
            a, s = alpha_sigma(lam)
            x0 = MU + a * S2 / (a * a * S2 + s * s) * (z - a * MU)
            return [((z - a * x0) / s).float()]

    noise = NOISE.reshape(2048, 1, 4, 4)
    out = sample_from_noise(ExactEps(), {}, {"sampler": "dpmpp-2m", "steps": 50}, noise,
                            torch.zeros(2048, dtype=torch.long))
    assert out.dtype == torch.float32 and out.shape == noise.shape
    assert abs(out.mean().item() - MU) < 1e-3 and abs(out.var().item() / S2 - 1) < 0.02


def test_sampler_config():
    cfg = SamplerConfig.from_dict({"sampler": "ddim", "eta": 1, "guidance": {"scale": 0.4}})
    assert cfg.sampler_kwargs() == {"eta": 1.0} and cfg.guidance.scale == 0.4
    assert SamplerConfig.from_dict({}).sampler_kwargs() == {}
    with pytest.raises(ConfigError, match="eta applies to ddim only"):
        SamplerConfig.from_dict({"sampler": "heun", "eta": 0.5})
    with pytest.raises(ConfigError, match="dpmpp-2m"):
        SamplerConfig.from_dict({"sampler": "dpm++"})
    with pytest.raises(ConfigError, match="karras"):
        SamplerConfig.from_dict({"spacing": "quadratic"})
    with pytest.raises(ConfigError, match="valid keys"):
        SamplerConfig.from_dict({"step": 10})
    assert set(SAMPLERS) >= {"ddim", "dpmpp-2m", "heun"}
