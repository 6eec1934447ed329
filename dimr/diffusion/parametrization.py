"""What the network predicts (ε, v or x0) and how its output maps to (x̂0, ε̂) (Salimans & Ho 2022, §4).

With z = α x + σ ε and α² + σ² = 1:  v = α ε − σ x,  x̂ = α z − σ v̂,  ε̂ = σ z + α v̂
(Salimans & Ho 2022, progressive distillation, Appendix D). `eps_space_factor(α, σ)` is the f with
‖ε̂ − ε‖² = f·‖out − target‖², so a loss weighting defined in ε-space means the same thing for every
parametrisation.
"""

import torch

from dimr.errors import ConfigError


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(N,) -> (N, 1, …, 1) with `ndim` dims in all (k-diffusion)."""
    v = torch.as_tensor(v)
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


class EpsPrediction:
    """The network predicts the noise ε (DDPM, DiT, DiMR)."""

    @staticmethod
    def target(x, eps, alpha, sigma):
        return eps

    @staticmethod
    def to_x0_eps(out, z, alpha, sigma):
        return (z - sigma * out) / alpha, out

    @staticmethod
    def eps_space_factor(alpha, sigma):
        return torch.ones_like(alpha)


class VPrediction:
    """The network predicts v = α ε − σ x (progressive distillation; simple diffusion)."""

    @staticmethod
    def target(x, eps, alpha, sigma):
        return alpha * eps - sigma * x

    @staticmethod
    def to_x0_eps(out, z, alpha, sigma):
        return alpha * z - sigma * out, sigma * z + alpha * out

    @staticmethod
    def eps_space_factor(alpha, sigma):
        return alpha**2  # v̂ − v = (ε̂ − ε)/α


class X0Prediction:
    """The network predicts the clean data x."""

    @staticmethod
    def target(x, eps, alpha, sigma):
        return x

    @staticmethod
    def to_x0_eps(out, z, alpha, sigma):
        return out, (z - alpha * out) / sigma

    @staticmethod
    def eps_space_factor(alpha, sigma):
        return (alpha / sigma) ** 2  # x̂ − x = −(σ/α)(ε̂ − ε)


PREDICTIONS = {"eps": EpsPrediction, "v": VPrediction, "x0": X0Prediction}


def get_prediction(name):
    """The parametrisation `name` from `PREDICTIONS` (methods take α, σ broadcastable to the data)."""
    if name not in PREDICTIONS:
        raise ConfigError(f"prediction {name!r} unknown; valid predictions: {sorted(PREDICTIONS)}")
    return PREDICTIONS[name]
