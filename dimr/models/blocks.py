"""Blocks of both nets: the pre-norm Transformer block, DiMR's ConvNeXt block, and the two output heads.

Every block takes `(x, c, e)`: tokens (N, L, D), the conditioning scalar c (N,) read by time-dependent
norms, and the conditioning vector e (N, cond_dim) or None, read by adaLN and TMSA. Which of these a
block uses is decided by its `Mechanism` (conditioning.py), never by its caller.
"""

import torch
import torch.nn as nn

from dimr.models.checkpointing import call_block
from dimr.models.conditioning import Mechanism, Modulation, TimeQKV, TimeShift, gate, modulate
from dimr.models.layers import (
    Attention,
    RelativePositionBias,
    make_mlp,
    patchify_tokens,
    tokens_to_map,
    unpatchify,
)
from dimr.models.td_layernorm import make_norm

#################################################################################
#                                   Blocks                                      #
#################################################################################


class TransformerBlock(nn.Module):
    """Pre-norm block x += Attn(Norm(x)); x += MLP(Norm(x)), conditioned as its mechanism says."""

    def __init__(
        self,
        dim,
        heads,
        mlp,
        mlp_ratio,
        mech: Mechanism,
        cond_dim,
        qkv_bias,
        grid,
        n_extra,
        dropout=0.0,
        gelu_approximate="none",
    ):
        super().__init__()
        self.norm1, self.attn = make_norm(mech.block_norm, dim), Attention(dim, heads, qkv_bias)
        self.norm2 = make_norm(mech.block_norm, dim)
        self.mlp = make_mlp(mlp, dim, mlp_ratio, gelu_approximate)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # adaLN: [shift1, scale1, shift2, scale2]; adaLN-Zero adds the gates [.., gate1, .., gate2] (DiT).
        self.modulation = Modulation(cond_dim, dim, mech.transformer_mods) if mech.transformer_mods else None
        self.time_qkv = TimeQKV(cond_dim, dim) if mech.tmsa else None
        self.rel_bias = RelativePositionBias(grid, heads, n_extra) if mech.tmsa else None

    def forward(self, x, c, e):
        shift1 = scale1 = gate1 = shift2 = scale2 = gate2 = None
        if self.modulation is not None:
            m = self.modulation(e)  # k × (N, D)
            if len(m) == 6:
                shift1, scale1, gate1, shift2, scale2, gate2 = m
            else:
                shift1, scale1, shift2, scale2 = m
        qkv_shift = self.time_qkv(e) if self.time_qkv is not None else None  # (N, 3D)
        bias = self.rel_bias() if self.rel_bias is not None else None  # (h, L, L)
        h = self.attn(modulate(self.norm1(x, c), shift1, scale1), qkv_shift, bias)  # (N, L, D)
        x = x + gate(self.drop(h), gate1)  # (N, L, D)
        h = self.mlp(modulate(self.norm2(x, c), shift2, scale2))  # (N, L, D)
        return x + gate(self.drop(h), gate2)  # (N, L, D)


class ConvNeXtBlock(nn.Module):
    """DiMR's ConvNeXt block: x += DWConv7×7(x) (no norm before it); x += MLP(Norm(x)) (official code)."""

    def __init__(
        self,
        dim,
        mlp,
        mlp_ratio,
        mech: Mechanism,
        cond_dim,
        grid,
        kernel_size=7,
        dropout=0.0,
        gelu_approximate="none",
    ):
        super().__init__()
        self.grid = grid
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = make_norm(mech.block_norm, dim)
        self.mlp = make_mlp(mlp, dim, mlp_ratio, gelu_approximate)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # adaLN: [shift, scale] of the MLP residual; adaLN-Zero: [gate1 (DWConv), shift, scale, gate2 (MLP)].
        self.modulation = Modulation(cond_dim, dim, mech.convnext_mods) if mech.convnext_mods else None
        self.time_shift = TimeShift(cond_dim, dim) if mech.tmsa else None

    def forward(self, x, c, e):
        gate1 = shift = scale = gate2 = None
        if self.modulation is not None:
            m = self.modulation(e)  # k × (N, D)
            if len(m) == 4:
                gate1, shift, scale, gate2 = m
            else:
                shift, scale = m
        h = patchify_tokens(self.dwconv(tokens_to_map(x, self.grid)))  # (N, L, D)
        x = x + gate(self.drop(h), gate1)  # (N, L, D)
        h = modulate(self.norm(x, c), shift, scale)  # (N, L, D)
        if self.time_shift is not None:
            h = h + self.time_shift(e)[:, None]  # (N, L, D)
        return x + gate(self.drop(self.mlp(h)), gate2)  # (N, L, D)


#################################################################################
#                                   Heads                                       #
#################################################################################


class ConvHead(nn.Module):
    """MRN branch head: Norm(D) → Conv2d(D → C_out, 3×3) on the token grid (official Stage.output_layer)."""

    def __init__(self, dim, out_channels, mech: Mechanism, cond_dim, grid, kernel_size=3):
        super().__init__()
        self.grid = grid
        self.norm = make_norm(mech.head_norm, dim)
        self.modulation = Modulation(cond_dim, dim, mech.head_mods) if mech.head_mods else None
        self.conv = nn.Conv2d(dim, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x, c, e):
        shift, scale = self.modulation(e) if self.modulation is not None else (None, None)
        x = modulate(self.norm(x, c), shift, scale)  # (N, L, D)
        return self.conv(tokens_to_map(x, self.grid))  # (N, C_out, G, G)


class LinearHead(nn.Module):
    """Single-branch head: Norm → Linear(D → p²·C_out) → unpatchify (→ 3×3 conv, U-ViT's `conv=True`)."""

    def __init__(
        self, dim, patch, out_channels, mech: Mechanism, cond_dim, final_conv, final_layer="mechanism"
    ):
        super().__init__()
        self.patch, self.out_channels = patch, out_channels
        # DiffiT's FinalLayer: LN without affine → SiLU → Linear, no time input (official diffit.py).
        diffit = final_layer == "diffit"
        self.norm = make_norm("ln-noaffine" if diffit else mech.head_norm, dim)
        self.act = nn.SiLU() if diffit else nn.Identity()
        self.modulation = Modulation(cond_dim, dim, mech.head_mods) if mech.head_mods and not diffit else None
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1) if final_conv else None

    def forward(self, x, c, e):
        shift, scale = self.modulation(e) if self.modulation is not None else (None, None)
        x = self.linear(self.act(modulate(self.norm(x, c), shift, scale)))  # (N, L, p²·C)
        x = unpatchify(x, self.patch, self.out_channels)  # (N, C, H, W)
        return self.conv(x) if self.conv is not None else x


def run_blocks(blocks, skips, x, c, e, feats=None):
    """Run blocks, with U-ViT long skips when `skips` (Linear(2D→D) per out block) is given.

    With skips: ⌊n/2⌋ in blocks, one middle block, ⌊n/2⌋ out blocks; before each out block
    x = Linear(concat[x, skip.pop()]). Appends every block output to `feats` (the MRN cascade reads them).
    """
    if skips is None:
        for blk in blocks:
            x = call_block(blk, x, c, e)
            if feats is not None:
                feats.append(x)
        return x
    n = len(blocks) // 2
    stack = []
    for blk in blocks[:n]:
        x = call_block(blk, x, c, e)
        stack.append(x)
        if feats is not None:
            feats.append(x)
    x = call_block(blocks[n], x, c, e)
    if feats is not None:
        feats.append(x)
    for lin, blk in zip(skips, blocks[n + 1 :], strict=True):
        x = call_block(blk, lin(torch.cat([x, stack.pop()], dim=-1)), c, e)  # (N, L, D)
        if feats is not None:
            feats.append(x)
    return x
