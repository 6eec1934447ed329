"""Time-dependent normalisation (DiMR §3.2): TD-LN and TD-RMSNorm, plus the plain norms they replace.

Every norm here has the call signature `norm(x, c)` with `x` (N, ..., D) and `c` (N,) the conditioning
scalar (c_noise = logsnr/4), so blocks can swap them freely; the plain norms ignore `c`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class TimeDependentParameter(nn.Module):
    """A per-channel vector that moves between p0 and p1 with time: p1 + sigmoid(c·(1+w) + b)·(p0 − p1)."""

    is_conditioning = True  # counted under "conditioning" by counting.param_breakdown

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.p0 = nn.Parameter(torch.full((dim,), float(init_value)))
        self.p1 = nn.Parameter(torch.full((dim,), float(init_value)))
        # w, b: excluded from weight decay (official `nodecay_weight`, `nodecay_bias`).
        self.w = nn.Parameter(torch.zeros(dim))
        self.b = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self):
        """p0 = p1 = init value and w = b = 0: a constant parameter, so TD-LN starts as plain LN."""
        nn.init.constant_(self.p0, self.init_value)
        nn.init.constant_(self.p1, self.init_value)
        nn.init.zeros_(self.w)
        nn.init.zeros_(self.b)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(c[:, None].to(self.w.dtype) * (1 + self.w) + self.b)  # (N, D); official tdp_torch
        return self.p1 + s * (self.p0 - self.p1)  # (N, D)


class TDLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are TimeDependentParameters (8·D parameters; TD-LN)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.gamma = TimeDependentParameter(dim, 1.0)
        self.beta = TimeDependentParameter(dim, 0.0)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)  # broadcast (N, D) over tokens
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        return x * self.gamma(c).view(shape) + self.beta(c).view(shape)


class TDRMSNorm(nn.Module):
    """RMSNorm with a time-dependent scale and no shift (4·D parameters), as in the released DiMR configs."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.gamma = TimeDependentParameter(dim, 1.0)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)
        # Official sigmoid/module.py TDRMSNorm: ‖x‖₂·D^(−1/2), eps outside; finite gradient at x = 0.
        rms = x.norm(2, dim=-1, keepdim=True) * self.dim ** (-1.0 / 2)
        return x / (rms + self.eps) * self.gamma(c).view(shape)


class LayerNorm(nn.LayerNorm):
    """Plain LayerNorm with the `norm(x, c)` signature (U-ViT: affine; DiT/DiffiT: no affine, eps 1e-6)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


NORMS = {
    "td-ln": lambda dim: TDLayerNorm(dim),
    "td-rmsnorm": lambda dim: TDRMSNorm(dim),
    "ln": lambda dim: LayerNorm(dim),
    "ln-noaffine": lambda dim: LayerNorm(dim, eps=1e-6, elementwise_affine=False),
}


def make_norm(kind: str, dim: int) -> nn.Module:
    """Build a norm by name (one of NORMS)."""
    return NORMS[kind](dim)


def td_nodecay_names(model: nn.Module) -> set[str]:
    """Names of the TD-norm w and b parameters of `model`: excluded from weight decay (official train.py)."""
    names = set()
    for mod_name, m in model.named_modules():
        if isinstance(m, TimeDependentParameter):
            names |= {f"{mod_name}.w", f"{mod_name}.b"}
    return names
