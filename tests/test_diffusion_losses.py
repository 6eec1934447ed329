"""Losses (DiMR multi-scale, simple diffusion multi-scale), weightings and parametrisations."""

import math

import pytest
import torch

from dimr.diffusion import DiffusionObjective, Loss, alpha_sigma, get_prediction
from dimr.diffusion.losses import weight_min_snr, weight_sigmoid
from dimr.diffusion.parametrization import append_dims
from dimr.errors import ConfigError


def box(x, k, mode):
    """Explicit k×k block pooling with Python loops: `boxsum` = sum / k, `avg` = sum / k²."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h // k, w // k, dtype=x.dtype)
    for i in range(h // k):
        for j in range(w // k):
            s = x[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k].sum((-2, -1))
            out[:, :, i, j] = s / k if mode == "boxsum" else s / k**2
    return out


def combine(loss, preds, target):
    return sum(w * m.mean() for _, w, m in loss.terms(preds, target))


# A 4×4 target ε = 0..15 and predictions at 1×1, 2×2 and 4×4 (3R: k = 4, 2, 1; α = 1/16, 1/4, 1).
TARGET = torch.arange(16.0).reshape(1, 1, 4, 4)
PREDS = [torch.full((1, 1, 1, 1), 28.0), torch.tensor([[[[5.0, 9.0], [21.0, 24.0]]]]),
         TARGET + 2.0 * (torch.arange(16) == 5).reshape(1, 1, 4, 4)]


def test_dimr_multiscale_loss_by_hand():
    # boxsum (official code): 4×4 sum 120 / 4 = 30 -> (30−28)² = 4; 2×2 sums / 2 = 5, 9, 21, 25
    # -> mean((0, 0, 0, 1)) = 0.25; full res: one pixel off by 2 -> 4/16 = 0.25.
    boxsum = Loss({"type": "dimr-multiscale", "pool": "boxsum"})
    assert combine(boxsum, PREDS, TARGET).item() == pytest.approx(4 / 16 + 0.25 / 4 + 0.25)
    # avg (paper): 120/16 = 7.5 -> 20.5² = 420.25; 2×2 means 2.5, 4.5, 10.5, 12.5 -> 269/4 = 67.25.
    avg = Loss({"type": "dimr-multiscale", "pool": "avg"})
    assert combine(avg, PREDS, TARGET).item() == pytest.approx(420.25 / 16 + 67.25 / 4 + 0.25)
    # random tensors against the explicit pooling, 2 channels, batch 3
    target = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    preds = [torch.randn(3, 2, 8 // k, 8 // k, dtype=torch.float64) for k in (4, 2, 1)]
    for mode in ("boxsum", "avg"):
        hand = sum((box(target, k, mode) - p).square().mean() / k**2 for k, p in zip((4, 2, 1), preds))
        got = combine(Loss({"type": "dimr-multiscale", "pool": mode}), preds, target)
        assert got.item() == pytest.approx(hand.item(), rel=1e-12)


def test_boxsum_pooling_keeps_unit_variance():
    eps = torch.randn(256, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert box(eps, 4, "boxsum").var().item() == pytest.approx(1.0, abs=0.05)
    assert box(eps, 4, "avg").var().item() == pytest.approx(1 / 16, abs=0.005)


def test_single_scale_is_the_last_term_alone():
    single = Loss({"type": "single-scale"}).terms(PREDS, TARGET)
    multi = Loss({"type": "dimr-multiscale"}).terms(PREDS, TARGET)
    assert [n for n, _, _ in single] == ["scale2"]
    assert single[0][1] == multi[-1][1] == 1.0
    assert torch.equal(single[0][2], multi[-1][2])


def test_simple_diffusion_multiscale_by_hand():
    target = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    pred = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    loss = Loss({"type": "simple-multiscale", "min_resolution": 2})
    # s ∈ {2, 4, 8}: Σ (1/s) mean‖D_s ε − D_s ε̂‖², D_s = average pooling to s×s.
    hand = sum((box(target, 8 // s, "avg") - box(pred, 8 // s, "avg")).square().mean() / s for s in (2, 4, 8))
    ignored = torch.zeros(2, 3, 4, 4, dtype=torch.float64)  # lower branches are not used
    assert combine(loss, [ignored, pred], target).item() == pytest.approx(hand.item(), rel=1e-12)
    assert [w for _, w, _ in loss.terms([pred], target)] == [1 / 2, 1 / 4, 1 / 8]
    # default lowest size 32: 64 -> {32, 64}; 28 (Fashion-MNIST) -> full resolution only
    default, x64 = Loss({"type": "simple-multiscale"}), torch.zeros(1, 1, 64, 64)
    assert [w for _, w, _ in default.terms([x64], x64)] == [1 / 32, 1 / 64]
    only_full = default.terms([torch.zeros(1, 1, 28, 28)], torch.ones(1, 1, 28, 28))
    assert [(w, m.item()) for _, w, m in only_full] == [(1 / 28, 1.0)]


def test_loss_weightings():
    lam = torch.tensor([math.log(10.0), math.log(2.0), 1.5], dtype=torch.float64)
    # min-SNR-5 in ε-space: min(SNR, 5)/SNR
    expected = torch.tensor([0.5, 1.0, min(math.exp(1.5), 5) / math.exp(1.5)], dtype=torch.float64)
    torch.testing.assert_close(weight_min_snr(lam), expected)
    assert weight_sigmoid(torch.tensor(1.5), bias=1.5).item() == pytest.approx(0.5)
    assert weight_sigmoid(torch.tensor(-10.0)).item() == pytest.approx(1.0, abs=1e-4)
    shorthand = Loss({"type": "single-scale", "weighting": "min-snr"})
    assert shorthand.cfg["weighting"] == {"type": "min-snr", "gamma": 5.0}


def test_loss_config_errors():
    with pytest.raises(ConfigError, match="boxsum"):
        Loss({"type": "dimr-multiscale", "pool": "max"})
    with pytest.raises(ConfigError, match="simple-multiscale"):
        Loss({"type": "multiscale"})
    with pytest.raises(ConfigError, match="valid parameters"):
        Loss({"type": "single-scale", "pool": "avg"})
    with pytest.raises(ConfigError, match="min-snr"):
        Loss({"type": "single-scale", "weighting": {"type": "snr"}})
    with pytest.raises(ConfigError, match="integer down-sampling"):
        Loss({"type": "dimr-multiscale"}).terms([torch.zeros(1, 1, 3, 3)], torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("name", ["eps", "v", "x0"])
def test_parametrisation_round_trips(name):
    g = torch.Generator().manual_seed(1)
    x, eps = (torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    lam = torch.tensor([-12.0, -3.0, 0.0, 3.0, 12.0], dtype=torch.float64)
    alpha, sigma = (append_dims(v, 4) for v in alpha_sigma(lam))
    z = alpha * x + sigma * eps
    pred = get_prediction(name)
    x0_hat, eps_hat = pred.to_x0_eps(pred.target(x, eps, alpha, sigma), z, alpha, sigma)
    torch.testing.assert_close(x0_hat, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    # any output maps to a consistent pair: z = α x̂ + σ ε̂, and back to the same output
    out = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    x0_hat, eps_hat = pred.to_x0_eps(out, z, alpha, sigma)
    torch.testing.assert_close(alpha * x0_hat + sigma * eps_hat, z)
    torch.testing.assert_close(pred.target(x0_hat, eps_hat, alpha, sigma), out)
    # the ε-space factor: ‖ε̂ − ε‖² = f·‖out − target‖² per sample
    f = pred.eps_space_factor(alpha, sigma).flatten()
    per = (out - pred.target(x, eps, alpha, sigma)).square().flatten(1).sum(1)
    torch.testing.assert_close((eps_hat - eps).square().flatten(1).sum(1), f * per)


def test_v_is_alpha_eps_minus_sigma_x():
    x, eps = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    torch.testing.assert_close(get_prediction("v").target(x, eps, a, s), 0.6 * eps - 0.8 * x)
    z = a * x + s * eps
    torch.testing.assert_close(get_prediction("v").to_x0_eps(0.6 * eps - 0.8 * x, z, a, s)[0], x)


# ----------------------------------------------------------------------------
# The whole objective against a hand computation, with a model that records its input.


class Recorder(torch.nn.Module):
    """Returns fixed predictions (lowest resolution first) and keeps what it was called with."""

    def __init__(self, preds):
        super().__init__()
        self.preds = torch.nn.ParameterList([torch.nn.Parameter(p) for p in preds])

    def forward(self, z, c, y):
        self.z, self.c = z, c
        return list(self.preds)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("loss_cfg,branches", [
    ({"type": "dimr-multiscale", "pool": "boxsum"}, [0, 1, 2]),
    ({"type": "dimr-multiscale", "pool": "avg"}, [0, 1, 2]),
    ({"type": "single-scale"}, [2]),
])
def test_objective_equals_hand_computation(prediction, loss_cfg, branches):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 8, 8, generator=g, dtype=torch.float64)
    preds = [torch.randn(6, 2, 8 // k, 8 // k, generator=g, dtype=torch.float64) for k in (4, 2, 1)]
    model = Recorder(preds)
    obj = DiffusionObjective({"schedule": {"type": "cosine"}, "prediction": prediction, "loss": loss_cfg})
    # Known λ per sample (so the noise can be read back from z exactly); the noise stays random.
    lam = torch.tensor([-6.0, -2.0, -0.5, 0.5, 2.0, 6.0], dtype=torch.float64)
    obj.sample_logsnr = lambda n, generator=None, device=None: lam
    y, gen = torch.zeros(6, dtype=torch.long), torch.Generator().manual_seed(3)
    loss, stats = obj.loss(model, x, y, generator=gen)
    torch.testing.assert_close(model.c, (lam / 4).float())  # the model sees c_noise = λ/4
    alpha, sigma = (append_dims(v, 4) for v in alpha_sigma(lam))
    noise = (model.z - alpha * x) / sigma
    # v-prediction: targets α·Pool(ε) − σ·Pool(x), MSE converted to ε-space by α² (uniform weighting).
    target = noise if prediction == "eps" else alpha * noise - sigma * x
    factor = torch.ones(6, dtype=torch.float64) if prediction == "eps" else alpha.flatten() ** 2
    mode, hand = loss_cfg.get("pool", "boxsum"), 0.0
    for r in branches:  # branch r of 3: k = 2^(2−r), α_r = 1/k²
        k = 2 ** (2 - r)
        per_sample = (box(target, k, mode) - preds[r]).square().flatten(1).mean(1)
        hand = hand + (factor * per_sample).mean() / k**2
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert stats["loss"] == pytest.approx(loss.item())
    assert set(stats) == {"loss"} | {f"loss/scale{r}" for r in branches}
