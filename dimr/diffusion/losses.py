"""Training losses: single-scale, DiMR multi-scale (Liu et al. 2024), simple diffusion's (Hoogeboom 2023).

A loss turns the per-branch predictions (lowest resolution first, `[-1]` full resolution) and the
full-resolution target into named terms `(name, weight, per-sample MSE)`; the objective sums
`weight · w(λ) · f · MSE` over terms and takes the batch mean, where w(λ) is the loss weighting
(defined in ε-space) and f converts the prediction's own MSE to ε-space (parametrization.py).
Pooling is linear, so for v- or x0-prediction the target is pooled exactly like ε: Pool(v) =
α·Pool(ε) − σ·Pool(x), and each term still equals the ε-space term times f.
"""

import torch
import torch.nn.functional as F

from dimr.diffusion.registry import check_choice, resolve_tagged
from dimr.errors import ConfigError

# ----------------------------------------------------------------------------
# Loss weightings w(λ), all relative to the ε-space MSE at the sampled λ.


def weight_uniform(lam):
    """w = 1: the plain ε-MSE of DDPM (Ho et al. 2020, L_simple)."""
    return torch.ones_like(lam)


def weight_min_snr(lam, gamma=5.0):
    """w = min(SNR, γ)/SNR (Min-SNR-γ, Hang et al. 2023, Eq. 7 in ε-space)."""
    return torch.exp(-lam).mul(gamma).clamp(max=1.0)


def weight_sigmoid(lam, bias=0.0):
    """w = sigmoid(b − λ) (Kingma & Gao 2023, §5; without their −dλ/dt factor)."""
    return torch.sigmoid(bias - lam)


def weight_v_mse(lam):
    """w = 1/α² = (SNR + 1)/SNR: the plain v-MSE, ‖v̂ − v‖² = ‖ε̂ − ε‖²/α² (Salimans & Ho 2022, §4,
    "SNR+1" weighting), which keeps weight at the noisy end where the global layout is decided."""
    return 1.0 + torch.exp(-lam)


WEIGHTINGS = {"uniform": weight_uniform, "min-snr": weight_min_snr, "sigmoid": weight_sigmoid,
              "v-mse": weight_v_mse}
WEIGHTING_DEFAULTS = {"uniform": {}, "min-snr": {"gamma": 5.0}, "sigmoid": {"bias": 0.0}, "v-mse": {}}


# ----------------------------------------------------------------------------
# Pooling and per-sample MSE.


def pool2d(x, k: int, mode: str):
    """k×k pooling: `avg` (paper) or `boxsum` (official DiMR code: k×k sum / k = k·avg, unit variance)."""
    if k == 1:
        return x
    out = F.avg_pool2d(x, k)
    return out * k if mode == "boxsum" else out


def mse(a, b):
    """Per-sample mean over C·H·W: (N, …) -> (N,)."""
    return (a - b).square().flatten(1).mean(1)


def _factor(pred, target):
    """Integer down-sampling factor from `target` to `pred` (both (N, C, H, W))."""
    (h, w), (H, W) = pred.shape[-2:], target.shape[-2:]
    k = H // h
    if h * k != H or w * k != W or pred.shape[:2] != target.shape[:2]:
        raise ConfigError(f"prediction of shape {tuple(pred.shape)} is not an integer down-sampling of "
                          f"the target {tuple(target.shape)}: branch resolutions must divide the input")
    return k


# ----------------------------------------------------------------------------
# Losses: (preds, target) -> [(name, weight, per-sample MSE)], lowest resolution first.


def single_scale_terms(preds, target):
    """The full-resolution term alone (the last prediction)."""
    _factor(preds[-1], target)
    return [(f"scale{len(preds) - 1}", 1.0, mse(preds[-1], target))]


def dimr_multiscale_terms(preds, target, pool="boxsum"):
    """Σ_r α_r‖Pool_k(ε) − ε̂_r‖², k = 2^(R−r) (from the shapes), α_r = 1/k² (DiMR §3.3)."""
    terms = []
    for r, pred in enumerate(preds):
        k = _factor(pred, target)
        terms.append((f"scale{r}", 1.0 / k**2, mse(pred, pool2d(target, k, pool))))
    return terms


def simple_multiscale_terms(preds, target, min_resolution=32):
    """Σ_s (1/s)‖D_s ε − D_s ε̂‖², s ∈ {min_resolution, …, d/2, d} (simple diffusion §3.3).

    Only the full-resolution prediction is used; D_s average-pools it and the target to s×s.
    Halving stops at `min_resolution` or an odd size; full resolution is always included.
    """
    pred, d = preds[-1], target.shape[-1]
    _factor(pred, target)
    sizes = [d]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= min_resolution:
        sizes.append(sizes[-1] // 2)
    terms = []
    for i, s in enumerate(reversed(sizes)):
        k = d // s
        terms.append((f"scale{i}", 1.0 / s, mse(pool2d(pred, k, "avg"), pool2d(target, k, "avg"))))
    return terms


LOSSES = {
    "single-scale": single_scale_terms,
    "dimr-multiscale": dimr_multiscale_terms,
    "simple-multiscale": simple_multiscale_terms,
}
_WEIGHTING = {"weighting": {"type": "uniform"}}
LOSS_DEFAULTS = {
    "single-scale": {**_WEIGHTING},
    "dimr-multiscale": {"pool": "boxsum", **_WEIGHTING},
    "simple-multiscale": {"min_resolution": 32, **_WEIGHTING},
}
POOLS = ("boxsum", "avg")


def resolve_loss_config(cfg) -> dict:
    """{"type": name, "weighting": {"type": …}, **params} with every default filled in."""
    out = resolve_tagged("loss", cfg, LOSS_DEFAULTS)
    out["weighting"] = resolve_tagged("loss weighting", out["weighting"], WEIGHTING_DEFAULTS)
    if "pool" in out:
        check_choice(out["pool"], POOLS, "loss pool")
    if out.get("min_resolution", 1) < 1:
        raise ConfigError(f"loss simple-multiscale.min_resolution must be >= 1, got {out['min_resolution']}")
    return out


class Loss:
    """A configured loss: `terms(preds, target)` and `weight(lam)` (see module docstring)."""

    def __init__(self, cfg):
        cfg = resolve_loss_config(cfg)
        self.cfg = cfg
        params = {k: v for k, v in cfg.items() if k not in ("type", "weighting")}
        self._terms, self._params = LOSSES[cfg["type"]], params
        w = cfg["weighting"]
        self._weight, self._wparams = WEIGHTINGS[w["type"]], {k: v for k, v in w.items() if k != "type"}

    def terms(self, preds, target):
        return self._terms(preds, target, **self._params)

    def weight(self, lam):
        return self._weight(lam, **self._wparams)

    def total(self, preds, target, w):
        """(batch-mean loss, {"loss": …, "loss/<term>": …}) of per-sample weights `w` (N,) over the terms."""
        total, stats = 0.0, {}
        for name, scale_weight, per_sample in self.terms(preds, target):
            term = (w * per_sample).mean()
            total = total + scale_weight * term
            stats[f"loss/{name}"] = term.detach()
        stats = {"loss": total.detach(), **stats}
        values = torch.stack(list(stats.values())).tolist()                # one device sync
        return total, dict(zip(stats, values))
