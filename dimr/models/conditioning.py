"""Registry of time-conditioning mechanisms (DiMR §3.2, Table 1), for the single-branch and the MRN net.

A mechanism is a small, declarative record: which norm the blocks, cascade and heads use, whether a
conditioning vector `e = MLP(sinusoid(c)) (+ Emb(y))` is computed, how many modulation vectors each
block type gets, and whether the time enters as a token. Blocks read these flags; nothing else branches
on the mechanism's name.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from dimr.errors import ConfigError


@dataclass(frozen=True)
class Mechanism:
    """How time reaches the network; see the module docstring."""

    name: str
    block_norm: str  # norm inside blocks (td_layernorm.NORMS key)
    cascade_norm: str  # norm of the cascade between branches (MRN only)
    head_norm: str  # norm before each output head
    embedding: bool  # computes a conditioning vector e = MLP(sinusoid(c)) (+ Emb(y) without class token)
    time_token: bool  # time enters as a sinusoidal token (U-ViT)
    transformer_mods: int  # modulation vectors per transformer block (adaLN 4, adaLN-Zero 6)
    # ConvNeXt blocks under adaLN (a choice the paper leaves open): DiMR's ConvNeXt block has no norm
    # before its DWConv, so only the MLP residual is modulated (shift, scale); adaLN-Zero adds a zero-init
    # gate on each residual ([gate1, shift, scale, gate2]) so the block starts as the identity like DiT's.
    convnext_mods: int
    head_mods: int  # modulation vectors of each head norm (DiT final layer: shift, scale)
    zero_init: bool  # modulations and output layers start at zero (adaLN-Zero)
    tmsa: bool  # time-dependent self-attention (DiffiT): qkv += W_t·e + b_t


# DiMR's released configs: TD-RMSNorm in blocks, TD-LN in cascade and heads; the paper: TD-LN everywhere.
# fmt: off
CONDITIONINGS: dict[str, Mechanism] = {m.name: m for m in [
    #         name          block norm     cascade  head norm      emb    token  T  C  H  zero   tmsa
    Mechanism("time-token", "ln",          "ln",    "ln",          False, True,  0, 0, 0, False, False),
    Mechanism("adaln",      "ln-noaffine", "ln",    "ln-noaffine", True,  False, 4, 2, 2, False, False),
    Mechanism("adaln-zero", "ln-noaffine", "ln",    "ln-noaffine", True,  False, 6, 4, 2, True,  False),
    Mechanism("td-ln",      "td-ln",       "td-ln", "td-ln",       False, False, 0, 0, 0, False, False),
    Mechanism("td-rmsnorm", "td-rmsnorm",  "td-ln", "td-ln",       False, False, 0, 0, 0, False, False),
    Mechanism("tmsa",       "ln-noaffine", "ln",    "ln",          True,  False, 0, 0, 0, False, True),
]}
# fmt: on


def get_mechanism(name: str) -> Mechanism:
    """Look up a conditioning mechanism; unknown names raise ConfigError listing the choices."""
    if name not in CONDITIONINGS:
        raise ConfigError(f"unknown conditioning {name!r}; choose one of: {', '.join(CONDITIONINGS)}")
    return CONDITIONINGS[name]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of a (N,) tensor, as in DiT/U-ViT `timestep_embedding`."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2·half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (N, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    """DiT's modulate: x·(1 + scale) + shift with (N, D) vectors broadcast over tokens; None = unmodulated."""
    if shift is None:
        return x
    return x * (1 + scale[:, None]) + shift[:, None]


def gate(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """adaLN-Zero gate α·x with α (N, D) broadcast over tokens; None = no gate."""
    return x if g is None else g[:, None] * x


class ConditionEmbedding(nn.Module):
    """e = MLP(sinusoid_256(c·scale)) + Emb(y): DiT's TimestepEmbedder + LabelEmbedder (Emb if no token)."""

    is_conditioning = True

    def __init__(self, dim: int, num_classes: int | None, sinusoid_scale: float, freq_dim: int = 256):
        super().__init__()
        self.freq_dim, self.sinusoid_scale = freq_dim, sinusoid_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        # Table of num_classes + 1 entries: the last is the null class for classifier-free guidance.
        self.class_embed = nn.Embedding(num_classes + 1, dim) if num_classes is not None else None

    def forward(self, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        freq = sinusoidal_embedding(c * self.sinusoid_scale, self.freq_dim).to(self.mlp[0].weight.dtype)
        e = self.mlp(freq)  # (N, D)
        if self.class_embed is not None:
            e = e + self.class_embed(y)  # (N, D)
        return e


class Modulation(nn.Module):
    """SiLU → Linear(cond_dim → k·D): k per-sample vectors (adaLN; zero-initialised for adaLN-Zero)."""

    is_conditioning = True

    def __init__(self, cond_dim: int, dim: int, k: int):
        super().__init__()
        self.k = k
        self.proj = nn.Linear(cond_dim, k * dim)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.proj(nn.functional.silu(e)).chunk(self.k, dim=-1)  # k × (N, D)


class TimeQKV(nn.Module):
    """TMSA's time term W_t·e + b_t added to q, k, v of every token (DiffiT Eq. 3–5), 3·D × cond_dim."""

    is_conditioning = True

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 3 * dim)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(e)  # (N, 3D)


class TimeShift(nn.Module):
    """TMSA in ConvNeXt blocks (a choice): no attention there, so W_t·e + b_t shifts the MLP input instead."""

    is_conditioning = True

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, dim)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(e)  # (N, D)
