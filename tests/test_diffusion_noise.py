"""Gaussian and Relay Diffusion block noise (Teng et al. 2023, Relay Diffusion)."""

import math

import pytest
import torch

from dimr.diffusion import block_noise, build_noise
from dimr.diffusion.noise import randn
from dimr.errors import ConfigError

S = 4
N, H = 1024, 16  # 1024 fields of 16×16: 262144 pixels per statistic


def correlation(x, dx, dy):
    """Empirical correlation between pixels (i, j) and (i+dx, j+dy), averaged over positions (circular)."""
    return (x * torch.roll(x, (dx, dy), dims=(-2, -1))).mean() / x.square().mean()


@pytest.fixture(scope="module")
def block():
    return block_noise(torch.randn(N, 1, H, H, generator=torch.Generator().manual_seed(0)), S)


def test_block_noise_unit_variance_per_pixel(block):
    per_pixel = block.var(dim=0)  # (1, H, W): variance over samples at each pixel
    # 1024 samples per pixel: the std of each estimate is √(2/1024) ≈ 0.044; 5σ for the worst of 256.
    assert (per_pixel - 1).abs().max() < 0.22
    # Pooled over 262144 correlated pixels: std √(2Σρ²/262144) ≈ 0.0076 (Σρ² = 7.56 at s = 4); 4σ.
    assert abs(per_pixel.mean().item() - 1) < 0.03
    assert abs(block.mean().item()) < 0.03  # std √(Σρ/262144) ≈ 0.0078


def test_block_noise_covariance_is_the_block_overlap(block):
    # Within the block the correlation is (s−|dx|)(s−|dy|)/s², zero beyond. The estimate over
    # 262144 pixels has std ≈ √(Σρ²/262144) ≈ 0.0054; the tolerance is 4.6σ (121 offsets tested).
    for dx in range(-S - 1, S + 2):
        for dy in range(-S - 1, S + 2):
            expected = max(S - abs(dx), 0) * max(S - abs(dy), 0) / S**2
            assert correlation(block, dx, dy).item() == pytest.approx(expected, abs=0.025), (dx, dy)


def test_block_noise_is_the_sum_of_rolls():
    eps = torch.randn(2, 3, 8, 8)
    s = 3
    manual = sum(torch.roll(eps, (i, j), dims=(-2, -1)) for i in range(s) for j in range(s)) / s
    torch.testing.assert_close(block_noise(eps, s), manual)
    # Block_s(ε)_{x,y} = (1/s) Σ ε_{x−i, y−j} with circular wrap, checked at a corner pixel
    corner = sum(eps[..., (0 - i) % 8, (0 - j) % 8] for i in range(s) for j in range(s)) / s
    torch.testing.assert_close(block_noise(eps, s)[..., 0, 0], corner)


# Tolerance 4σ of the variance estimate over 262144 correlated values: σ ≈ 0.0028 at a = 0.15
# (so the official 1 + a² = 1.0225 is told apart from 1), σ ≈ 0.009 at a = 1.
@pytest.mark.parametrize("a,tol", [(0.15, 0.011), (1.0, 0.04)])
def test_mixed_noise_normalisation_switch(a, tol):
    shape = (N, 1, H, H)
    official = build_noise({"type": "block", "a": a, "normalize": False})
    paper = build_noise({"type": "block", "a": a, "normalize": True})
    v_off = official.sample(shape, generator=torch.Generator().manual_seed(1)).var().item()
    v_pap = paper.sample(shape, generator=torch.Generator().manual_seed(1)).var().item()
    assert v_off == pytest.approx(1 + a**2, abs=tol)
    assert v_pap == pytest.approx(1.0, abs=tol)
    assert v_off / v_pap == pytest.approx(1 + a**2, rel=1e-5)  # same draws, rescaled by √(1+a²)


def test_mixed_noise_is_eps_plus_a_block_of_a_second_draw():
    shape = (2, 3, 8, 8)
    noise = build_noise({"type": "block", "a": 0.15, "s": 4})
    got = noise.sample(shape, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    eps, eps2 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)  # ε first, then ε′
    torch.testing.assert_close(got, eps + 0.15 * block_noise(eps2, 4))
    # mixed noise: neighbour correlation a²·(s−1)/s / (1 + a²)
    mixed = build_noise({"type": "block", "a": 1.0})
    big = mixed.sample((N, 1, H, H), generator=torch.Generator().manual_seed(2))
    assert correlation(big, 1, 0).item() == pytest.approx(0.75 / 2, abs=0.02)


def test_gaussian_noise_determinism_dtype_and_per_sample_generators():
    noise = build_noise({"type": "gaussian"})
    a = noise.sample((4, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = noise.sample((4, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert a.dtype == torch.float64 and torch.equal(a, b)
    x = noise.sample((20000,), generator=torch.Generator().manual_seed(4))
    assert abs(x.mean().item()) < 0.03 and abs(x.std().item() - 1) < 0.03
    # a list of generators: sample i depends only on generator i (one seed per image)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    first = randn((3, 2, 4, 4), gens([7, 8, 9]))
    torch.testing.assert_close(randn((2, 2, 4, 4), gens([9, 8]))[0], first[2])
    torch.testing.assert_close(first[0], torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(7)))


def test_noise_config_errors():
    with pytest.raises(ConfigError, match="block"):
        build_noise({"type": "pyramid"})
    with pytest.raises(ConfigError, match="valid parameters"):
        build_noise({"type": "block", "scale": 2})
    with pytest.raises(ConfigError, match="s >= 1"):
        build_noise({"type": "block", "s": 0})
    with pytest.raises(ConfigError, match="expected bool"):
        build_noise({"type": "block", "normalize": "yes"})
    assert math.isclose(build_noise("block").a, 0.15) and build_noise("block").s == 4
