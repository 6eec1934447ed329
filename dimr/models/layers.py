"""Layers shared by the nets: attention, MLPs, relative position bias, token reshapes, positions, init."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    """Multi-head self-attention (SDPA); qkv without bias in U-ViT and DiMR, output projection with bias."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, qkv_shift=None, attn_bias=None):
        N, L, D = x.shape
        qkv = self.qkv(x)  # (N, L, 3D)
        if qkv_shift is not None:
            qkv = qkv + qkv_shift[:, None]  # TMSA: time-dependent q, k, v offsets (N, 1, 3D)
        q, k, v = qkv.view(N, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 × (N, h, L, d)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)  # SDPA wants the mask in the query's dtype (autocast)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (N, h, L, d)
        return self.proj(x.transpose(1, 2).reshape(N, L, D))  # (N, L, D)


class Mlp(nn.Module):
    """Plain MLP: Linear → GELU → Linear (ratio 4 in U-ViT/DiT; DiT's GELU is the tanh approximation)."""

    def __init__(self, dim: int, hidden: int, gelu_approximate: str = "none"):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU(approximate=gelu_approximate)  # DiT models.py: approx_gelu in DiTBlock's Mlp

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class GEGLU(nn.Module):
    """Gated MLP W2(GELU(W0 x) ⊙ W1 x), hidden width 2D in DiMR (official MLPBlock)."""

    def __init__(self, dim: int, hidden: int, gelu_approximate: str = "none"):
        super().__init__()
        self.w0, self.w1, self.w2 = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU(approximate=gelu_approximate)

    def forward(self, x):
        return self.w2(self.act(self.w0(x)) * self.w1(x))


def make_mlp(kind: str, dim: int, ratio: float, gelu_approximate: str = "none") -> nn.Module:
    """`glu` (GEGLU) or `gelu` (plain MLP) with hidden width round(ratio·dim); GELU exact or "tanh"."""
    hidden = int(round(ratio * dim))
    mlp = GEGLU if kind == "glu" else Mlp
    return mlp(dim, hidden, gelu_approximate)


class RelativePositionBias(nn.Module):
    """Learned (2G−1)² × heads bias table over a G×G token grid (Swin/DiffiT); extra tokens get 0 bias."""

    def __init__(self, grid: int, heads: int, n_extra: int = 0):
        super().__init__()
        self.grid, self.heads, self.n_extra = grid, heads, n_extra
        self.table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (grid - 1)  # (L, L, 2)
        self.register_buffer("index", rel[..., 0] * (2 * grid - 1) + rel[..., 1], persistent=False)

    def forward(self) -> torch.Tensor:
        L = self.grid * self.grid
        bias = self.table[self.index.reshape(-1)].view(L, L, self.heads).permute(2, 0, 1)  # (h, L, L)
        return F.pad(bias, (self.n_extra, 0, self.n_extra, 0))  # (h, n_extra + L, n_extra + L)


def patchify_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, D, G, G) feature map → (N, G·G, D) tokens in row-major order."""
    # Contiguous tokens keep every later activation contiguous; the DWConv then sees channels-last maps,
    # for which the CPU depthwise-conv backward is several times faster (a no-op copy for those).
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]).contiguous()


def tokens_to_map(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, G·G, D) tokens → (N, D, G, G) feature map (a channels-last view)."""
    return x.reshape(x.shape[0], grid, grid, x.shape[2]).permute(0, 3, 1, 2)


def unpatchify(x: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """(N, G·G, p·p·C) → (N, C, G·p, G·p), the inverse of a stride-p patch embedding (DiT, U-ViT)."""
    N, L, _ = x.shape
    g = int(round(L**0.5))
    x = x.reshape(N, g, g, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(N, channels, g * patch, g * patch)


def pixel_shuffle_tokens(x: torch.Tensor, grid: int, ratio: int) -> torch.Tensor:
    """(N, G·G, r·r·D) → (N, (G·r)², D), laid out like DiMR's PixelShuffleUpsample (official blocks.py)."""
    N, _, C = x.shape
    D = C // (ratio * ratio)
    x = x.reshape(N, grid, grid, ratio, ratio, D).transpose(2, 3)  # (N, G, r, G, r, D)
    return x.reshape(N, grid * ratio * grid * ratio, D)


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (1, G·G, D), as DiT/MAE `get_2d_sincos_pos_embed`, on any device."""

    def one_d(d, pos):  # (M,) positions → (M, d)
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    coords = torch.arange(grid, dtype=torch.float64)
    gh, gw = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([one_d(dim // 2, gw), one_d(dim // 2, gh)], dim=1)  # DiT's order: grid[0] (columns) first
    return emb.float()[None]


#################################################################################
#                   Initialisation (called by initialize_weights)               #
#################################################################################


def init_linear(m: nn.Linear, scheme: str):
    """Weight trunc-normal(0.02) (U-ViT `_init_weights`, DiMR's Linear) or xavier-uniform ("dit"); bias 0."""
    if scheme == "dit":
        nn.init.xavier_uniform_(m.weight)  # DiT models.py initialize_weights: _basic_init
    else:
        nn.init.trunc_normal_(m.weight, std=0.02)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def init_patch_embed_as_linear(conv: nn.Conv2d):
    """DiT: initialise the patch embedding like nn.Linear, xavier-uniform on the (D, C·p·p) view; bias 0."""
    w = conv.weight.data
    nn.init.xavier_uniform_(w.view([w.shape[0], -1]))  # DiT models.py initialize_weights
    nn.init.zeros_(conv.bias)


def init_label_embed(m: nn.Embedding, scheme: str):
    """Class table: trunc-normal(0.02) (DiMR), N(0, 0.02²) ("normal", DiT) or N(0, 1) ("normal-1", U-ViT)."""
    if scheme == "normal-1":
        nn.init.normal_(m.weight, std=1.0)  # PyTorch's nn.Embedding default, kept by U-ViT (libs/uvit.py)
    elif scheme == "normal":
        nn.init.normal_(m.weight, std=0.02)  # DiT models.py: y_embedder.embedding_table
    else:
        nn.init.trunc_normal_(m.weight, std=0.02)
