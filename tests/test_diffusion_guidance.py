"""Classifier-free guidance in the Denoiser (Ho & Salimans 2022): scale, MDT's cosine ramp, DiT's channels."""

import math

import pytest
import torch

from dimr.diffusion import Denoiser, GuidanceConfig, build_schedule, guidance_scale
from dimr.errors import ConfigError


class ClassModel(torch.nn.Module):
    """ε-prediction that depends on the class, channel by channel; counts its batch sizes."""

    num_classes = 5

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, z, c_noise, y):
        self.batches.append(z.shape[0])
        ch = torch.arange(1, z.shape[1] + 1, dtype=z.dtype)[None, :, None, None]
        return [0.5 * z + 0.1 * (y.to(z.dtype) + 1)[:, None, None, None] * ch + c_noise[:, None, None, None]]


Z = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 2, 4])
COSINE = build_schedule({"type": "cosine"})


def conditional(lam, y=Y):
    return Denoiser(ClassModel(), {})(Z, lam, y)


def test_scale_zero_is_the_conditional_denoiser_in_one_pass():
    model = ClassModel()
    x0 = Denoiser(model, {}, {"scale": 0.0, "ramp": "power-cosine"})(Z, 1.0, Y)
    assert model.batches == [3] and x0.dtype == torch.float32
    # by hand: x̂0 = (z − σ ε̂)/α at λ = 1
    a, s = math.sqrt(1 / (1 + math.exp(-1))), math.sqrt(1 / (1 + math.exp(1)))
    eps = ClassModel()(Z, torch.full((3,), 0.25), Y)[0]
    torch.testing.assert_close(x0, (Z - s * eps) / a)


def test_constant_guidance_mixes_conditional_and_null_class():
    model = ClassModel()
    x0 = Denoiser(model, {}, {"scale": 0.4})(Z, 0.5, Y)
    assert model.batches == [6]  # cond and uncond batched together
    x_c, x_u = conditional(0.5), conditional(0.5, torch.full_like(Y, ClassModel.num_classes))
    torch.testing.assert_close(x0, x_c + 0.4 * (x_c - x_u))  # = ε_c + s(ε_c − ε_u) mapped to x̂0


def test_power_cosine_ramp_values_at_the_ends():
    t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    const = GuidanceConfig.from_dict({"scale": 0.4})
    ramp = GuidanceConfig.from_dict({"scale": 0.4, "ramp": "power-cosine", "power": 2.0})
    torch.testing.assert_close(guidance_scale(const, t), torch.full_like(t, 0.4))
    # w(t) = 1 + (w−1)(1 − cos(π(1−t)^p))/2: no guidance at the noisy end, full at the clean end
    expected = torch.tensor([0.0, 0.4 * (1 - math.cos(math.pi * 0.25)) / 2, 0.4], dtype=torch.float64)
    torch.testing.assert_close(guidance_scale(ramp, t), expected)
    # through the denoiser: at λ_min (t = 1) the ramp gives the conditional x̂0, at λ_max (t = 0) full guidance
    ramped = Denoiser(ClassModel(), {}, ramp)
    torch.testing.assert_close(ramped(Z, COSINE.logsnr_min, Y), conditional(COSINE.logsnr_min))
    full = Denoiser(ClassModel(), {}, const)
    torch.testing.assert_close(ramped(Z, COSINE.logsnr_max, Y), full(Z, COSINE.logsnr_max, Y))
    assert not torch.allclose(full(Z, COSINE.logsnr_min, Y), conditional(COSINE.logsnr_min))


def test_dit_channel_option_guides_only_the_first_three_channels():
    lam = 0.0
    all_ch = Denoiser(ClassModel(), {}, {"scale": 1.5})(Z, lam, Y)
    dit = Denoiser(ClassModel(), {}, {"scale": 1.5, "channels": "dit-first3"})(Z, lam, Y)
    torch.testing.assert_close(dit[:, :3], all_ch[:, :3])
    torch.testing.assert_close(dit[:, 3:], conditional(lam)[:, 3:])
    assert not torch.allclose(all_ch[:, 3:], conditional(lam)[:, 3:])


def test_per_sample_logsnr_and_guidance_config_errors():
    lam = torch.tensor([-2.0, 0.0, 3.0])
    batched = Denoiser(ClassModel(), {}, {"scale": 0.4})(Z, lam, Y)
    for i in range(3):
        one = Denoiser(ClassModel(), {}, {"scale": 0.4})(Z[i:i + 1], lam[i].item(), Y[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], one)
    with pytest.raises(ConfigError, match="power-cosine"):
        GuidanceConfig.from_dict({"ramp": "linear"})
    with pytest.raises(ConfigError, match="dit-first3"):
        GuidanceConfig.from_dict({"channels": "first3"})
    with pytest.raises(ConfigError, match="valid keys"):
        GuidanceConfig.from_dict({"w": 1.4})
