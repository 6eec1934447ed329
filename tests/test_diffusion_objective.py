"""DiffusionObjective on a tiny multi-branch conv net, and the diffusion config section."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dimr.diffusion import DiffusionConfig, DiffusionObjective
from dimr.errors import ConfigError


class TinyMultiBranch(torch.nn.Module):
    """Three conv heads at 8, 16 and 32 px, lowest resolution first, like a 3R DiMR's outputs."""

    num_classes, in_channels, resolution = 10, 3, 32

    def __init__(self, out_channels=3):
        super().__init__()
        self.label = torch.nn.Embedding(self.num_classes + 1, 1)
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(4, out_channels, 3, padding=1) for _ in range(3))

    def forward(self, z, c_noise, y):
        outs = []
        for k, head in zip((4, 2, 1), self.heads):
            zr = F.avg_pool2d(z, k) if k > 1 else z                                  # (N, 3, 32/k, 32/k)
            cond = (c_noise[:, None] + self.label(y))[:, :, None, None]              # (N, 1, 1, 1)
            outs.append(head(torch.cat([zr, cond.expand(-1, 1, *zr.shape[-2:])], 1)))
        return outs


def batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 11, (n,), generator=g)


@pytest.mark.parametrize("cfg", [
    {},
    {"prediction": "v", "loss": {"type": "simple-multiscale", "min_resolution": 8},
     "schedule": {"type": "cosine-interpolated", "resolution": 32, "d_low": 8, "d_high": 32}},
    {"prediction": "x0", "noise": {"type": "block", "normalize": True}, "c_noise": "edm",
     "loss": {"type": "dimr-multiscale", "pool": "avg", "weighting": {"type": "min-snr"}},
     "time_sampling": {"type": "edm-lognormal"}},
])
def test_loss_finite_gradients_flow_and_stats(cfg):
    torch.manual_seed(0)
    model, (x, y) = TinyMultiBranch(), batch()
    obj = DiffusionObjective(cfg)
    loss, stats = obj.loss(model, x, y, generator=torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    # the multi-scale DiMR loss trains every head; the others only the full-resolution one
    trained = range(3) if obj.cfg.loss["type"] == "dimr-multiscale" else [2]
    for r in trained:
        assert model.heads[r].weight.grad.abs().sum() > 0, r
    assert model.label.weight.grad.abs().sum() > 0
    assert set(stats) == {"loss", "loss/scale0", "loss/scale1", "loss/scale2"}
    assert all(isinstance(v, float) for v in stats.values())


def test_default_loss_is_the_weighted_sum_of_the_scale_stats():
    model, (x, y) = TinyMultiBranch(), batch()
    loss, stats = DiffusionObjective({}).loss(model, x, y, generator=torch.Generator().manual_seed(1))
    weighted = stats["loss/scale0"] / 16 + stats["loss/scale1"] / 4 + stats["loss/scale2"]
    assert loss.item() == pytest.approx(weighted, rel=1e-6)
    single, s_stats = DiffusionObjective({"loss": {"type": "single-scale"}}).loss(
        model, x, y, generator=torch.Generator().manual_seed(1))
    assert single.item() == pytest.approx(stats["loss/scale2"], rel=1e-6)
    assert set(s_stats) == {"loss", "loss/scale2"}


def test_deterministic_under_a_fixed_generator():
    torch.manual_seed(0)
    model, (x, y) = TinyMultiBranch(), batch()
    obj = DiffusionObjective({"noise": {"type": "block"}})
    a, _ = obj.loss(model, x, y, generator=torch.Generator().manual_seed(7))
    torch.rand(10)  # the global RNG must not matter
    b, _ = obj.loss(model, x, y, generator=torch.Generator().manual_seed(7))
    c, _ = obj.loss(model, x, y, generator=torch.Generator().manual_seed(8))
    assert a.item() == b.item() and a.item() != c.item()


def test_learned_variance_channels_are_ignored():
    torch.manual_seed(0)
    base, wide = TinyMultiBranch(3), TinyMultiBranch(6)
    with torch.no_grad():  # the first 3 output channels of `wide` equal `base`
        for hb, hw in zip(base.heads, wide.heads):
            hw.weight[:3], hw.bias[:3] = hb.weight, hb.bias
        wide.label.weight.copy_(base.label.weight)
    x, y = batch()
    obj = DiffusionObjective({})
    a, _ = obj.loss(base, x, y, generator=torch.Generator().manual_seed(2))
    b, _ = obj.loss(wide, x, y, generator=torch.Generator().manual_seed(2))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_diffusion_config_defaults_round_trip_and_errors():
    full = dataclasses.asdict(DiffusionConfig.from_dict({"schedule": {"type": "vp-continuous"}}))
    assert full["schedule"] == {"type": "vp-continuous", "beta_min": 0.1, "beta_max": 20.0, "t_min": 1e-5}
    assert full["loss"] == {"type": "dimr-multiscale", "pool": "boxsum", "weighting": {"type": "uniform"}}
    assert full["c_noise"] == "logsnr/4" and full["prediction"] == "eps"
    assert dataclasses.asdict(DiffusionConfig.from_dict(full)) == full  # config.json reads back the same
    with pytest.raises(ConfigError, match="valid keys"):
        DiffusionConfig.from_dict({"schedul": {"type": "cosine"}})
    with pytest.raises(ConfigError, match="'eps', 'v', 'x0'"):
        DiffusionConfig.from_dict({"prediction": "score"})
    with pytest.raises(ConfigError, match="dimr-latent-proxy"):
        DiffusionConfig.from_dict({"c_noise": "t"})
    with pytest.raises(ConfigError, match="edm-lognormal"):
        DiffusionConfig.from_dict({"time_sampling": {"type": "logit-normal"}})
