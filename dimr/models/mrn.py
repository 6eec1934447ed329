"""The multi-resolution network of DiMR (arXiv 2406.09416 §3.1, Fig. 2; official libs/core/blocks.py).

R branches, lowest resolution first. Branch r patchifies the noisy input with stride p_r, adds learned
positions, adds the cascade from branch r−1, runs its blocks (with U-ViT long skips) and predicts at its
own resolution with a Norm → 3×3 conv head. The cascade concatenates all of branch r's features,
normalises, projects to r²·D_{r+1} and pixel-shuffles them up to branch r+1's grid.
"""

import torch
import torch.nn as nn

from dimr.models.blocks import ConvHead, ConvNeXtBlock, TransformerBlock, run_blocks
from dimr.models.conditioning import ConditionEmbedding, Modulation, get_mechanism, sinusoidal_embedding
from dimr.models.config import MRNConfig
from dimr.models.layers import (
    init_label_embed,
    init_linear,
    init_patch_embed_as_linear,
    patchify_tokens,
    pixel_shuffle_tokens,
    sincos_pos_embed,
)
from dimr.models.td_layernorm import TimeDependentParameter, make_norm, td_nodecay_names


class Cascade(nn.Module):
    """Norm((nb+1)·D_r) → Linear → pixel shuffle ×ratio → Norm(D_{r+1}) (official PixelShuffleUpsample)."""

    def __init__(self, in_dim, out_dim, grid, ratio, mech):
        super().__init__()
        self.grid, self.ratio = grid, ratio
        self.norm_in = make_norm(mech.cascade_norm, in_dim)
        self.proj = nn.Linear(in_dim, out_dim * ratio * ratio)
        self.norm_out = make_norm(mech.cascade_norm, out_dim)

    def forward(self, feats, c):
        x = self.proj(self.norm_in(feats, c))  # (N, G², r²·D')
        x = pixel_shuffle_tokens(x, self.grid, self.ratio)  # (N, (G·r)², D')
        return self.norm_out(x, c)  # (N, (G·r)², D')


class Branch(nn.Module):
    """One resolution of the MRN: patch embedding, positions, blocks with long skips, head."""

    def __init__(self, cfg: MRNConfig, r: int, mech, cond_dim: int, first: bool, has_head: bool):
        super().__init__()
        D, p, kind = cfg.widths[r], cfg.patch_sizes[r], cfg.block_types[r]
        self.kind, self.grid = kind, cfg.resolution // p
        self.patch_embed = nn.Conv2d(cfg.in_channels + cfg.cond_channels, D, kernel_size=p, stride=p)
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, D))
        else:  # fixed 2-D sin-cos table (DiT/MAE), the same for every run
            self.register_buffer("pos_embed", sincos_pos_embed(D, self.grid), persistent=False)
        # Class: a prepended token in every transformer branch (official Stage.class_embeds). ConvNeXt
        # branches see it through the cascade; a ConvNeXt *first* branch (Table 3) has no cascade, so it adds
        # the class embedding to every position instead (a choice: the conv analogue of a token).
        use_class = cfg.class_token and (kind == "transformer" or first)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, D) if use_class else None
        # time-token: a sinusoidal token of width D in transformer branches (U-ViT, no MLP); ConvNeXt branches
        # add the same embedding to every position (a choice, so every branch sees time as with TD-LN).
        self.time_token, self.sinusoid_scale = mech.time_token, cfg.sinusoid_scale
        n_tokens = int(self.class_embed is not None) + int(self.time_token)
        self.n_extra = n_tokens if kind == "transformer" else 0  # tokens prepended to the patches
        self.merge = nn.Linear(2 * D, D) if (not first and cfg.cascade_merge == "concat") else None
        self.branch_skip = nn.Linear(2 * D, D) if (not first and cfg.branch_skips) else None

        n_blocks = 2 * (cfg.depths[r] // 2) + 1 if cfg.long_skips else cfg.depths[r]
        common = dict(mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio, mech=mech, cond_dim=cond_dim, dropout=cfg.dropout)
        common.update(gelu_approximate=cfg.gelu_approximate)
        if kind == "transformer":
            tf = dict(heads=cfg.heads[r], qkv_bias=cfg.qkv_bias, grid=self.grid, n_extra=self.n_extra)
            self.blocks = nn.ModuleList([TransformerBlock(D, **tf, **common) for _ in range(n_blocks)])
        else:
            cn = dict(grid=self.grid, kernel_size=cfg.kernel_size)
            self.blocks = nn.ModuleList([ConvNeXtBlock(D, **cn, **common) for _ in range(n_blocks)])
        self.skips = None
        if cfg.long_skips:  # U-ViT: x = Linear(2D→D)(concat[x, skip]) before each out block
            self.skips = nn.ModuleList([nn.Linear(2 * D, D) for _ in range(n_blocks // 2)])
        out_ch = cfg.in_channels * (2 if (cfg.learn_sigma and r == len(cfg.widths) - 1) else 1)
        self.head = ConvHead(D, out_ch, mech, cond_dim, self.grid) if has_head else None

    def forward(self, x, low, c, e, y, collect: bool):
        """Return (prediction or None, features for the next branch's cascade: all, or the last block's)."""
        h = patchify_tokens(self.patch_embed(x)) + self.pos_embed.to(x.dtype)  # (N, L, D)
        if low is not None:
            h = self.merge(torch.cat([h, low], -1)) if self.merge is not None else h + low  # (N, L, D)
        extras = []
        if self.class_embed is not None:
            extras.append(self.class_embed(y)[:, None])  # (N, 1, D)
        if self.time_token:
            extras.append(sinusoidal_embedding(c * self.sinusoid_scale, h.shape[-1]).to(h.dtype)[:, None])
        if self.kind == "transformer":
            h = torch.cat(extras + [h], dim=1)  # (N, n_extra + L, D)
        else:
            h = h + sum(extras) if extras else h  # (N, L, D), broadcast over positions
        feats = [h] if collect else None
        h = run_blocks(self.blocks, self.skips, h, c, e, feats)  # (N, n_extra + L, D)
        h = h[:, self.n_extra :]  # (N, L, D)
        if collect:
            feats = torch.cat([f[:, self.n_extra :] for f in feats], dim=-1)  # (N, L, (nb+1)·D)
        last = h
        if self.branch_skip is not None:
            h = self.branch_skip(torch.cat([h, low], -1))  # (N, L, D)
        pred = self.head(h, c, e) if self.head is not None else None  # (N, C, H_r, W_r)
        return pred, (feats if collect else last)


class MRN(nn.Module):
    """DiMR's multi-resolution network; forward returns per-branch predictions, lowest resolution first."""

    def __init__(self, cfg: MRNConfig):
        super().__init__()
        self.cfg, self.mech = cfg, get_mechanism(cfg.conditioning)
        self.in_channels, self.resolution, self.num_classes = cfg.in_channels, cfg.resolution, cfg.num_classes
        self.cond_channels = cfg.cond_channels  # CDM §3: the low-resolution image, concatenated to x
        R = len(cfg.widths)
        cond_dim = cfg.widths[0]  # width of the adaLN/TMSA vector e (one for all branches): the first D
        class_in_e = None if cfg.class_token else cfg.num_classes
        self.cond_embed = None
        if self.mech.embedding:  # adaLN, TMSA: e = MLP(sinusoid(c)) (+ Emb(y) without a class token)
            self.cond_embed = ConditionEmbedding(cond_dim, class_in_e, cfg.sinusoid_scale)
        heads = [cfg.output_heads == "all" or r == R - 1 for r in range(R)]
        self.branches = nn.ModuleList(
            [Branch(cfg, r, self.mech, cond_dim, r == 0, heads[r]) for r in range(R)]
        )
        self.cascades = nn.ModuleList()
        for r in range(R - 1):
            n_feats = len(self.branches[r].blocks) + 1 if cfg.cascade_features == "all" else 1
            ratio = cfg.patch_sizes[r] // cfg.patch_sizes[r + 1]
            grid = self.branches[r].grid
            self.cascades.append(Cascade(n_feats * cfg.widths[r], cfg.widths[r + 1], grid, ratio, self.mech))
        self.initialize_weights()

    def initialize_weights(self):
        """Weights by cfg.init and cfg.label_embed_init, zero biases, convs PyTorch's; then the zero-inits."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m, self.cfg.init)
            elif isinstance(m, nn.Embedding):
                init_label_embed(m, self.cfg.label_embed_init)
            elif isinstance(m, TimeDependentParameter):
                m.reset_parameters()  # p0 = p1, w = b = 0: TD-LN starts as plain LN
        for b in self.branches:
            if isinstance(b.pos_embed, nn.Parameter):
                nn.init.trunc_normal_(b.pos_embed, std=0.02)
        if self.cfg.init == "dit":  # DiT models.py initialize_weights, applied to every branch
            for b in self.branches:
                init_patch_embed_as_linear(b.patch_embed)
            if self.cond_embed is not None:  # t_embedder.mlp[0] and mlp[2] weights N(0, 0.02²)
                for lin in self.cond_embed.mlp[::2]:
                    nn.init.normal_(lin.weight, std=0.02)
        if self.mech.zero_init:
            # adaLN-Zero (DiT): every modulation and every output head starts at zero.
            for m in self.modules():
                if isinstance(m, Modulation):
                    nn.init.zeros_(m.proj.weight)
                    nn.init.zeros_(m.proj.bias)
            for b in self.branches:
                if b.head is not None:
                    nn.init.zeros_(b.head.conv.weight)
                    nn.init.zeros_(b.head.conv.bias)

    def forward(self, x, c_noise, y):
        """x (N, C + cond_channels, H, W), c_noise (N,), y (N,) → [(N, C_out, H_r, W_r)], lowest res first."""
        e = self.cond_embed(c_noise, y) if self.cond_embed is not None else None  # (N, cond_dim)
        preds, low, collect = [], None, self.cfg.cascade_features == "all"
        for r, branch in enumerate(self.branches):
            last = r == len(self.branches) - 1
            pred, feats = branch(x, low, c_noise, e, y, collect=collect and not last)
            if pred is not None:
                preds.append(pred)
            if not last:
                low = self.cascades[r](feats, c_noise)  # (N, L_{r+1}, D_{r+1})
        return preds

    def no_weight_decay_params(self) -> set[str]:
        """TD-LN w and b (official `nodecay_weight`, `nodecay_bias`); all else keeps weight decay."""
        return td_nodecay_names(self)

    def component_of(self, name: str) -> str:
        """Component of a parameter for counting.param_breakdown (conditioning is sorted out before)."""
        parts = name.split(".")
        if parts[0] == "branches":
            r, sub = int(parts[1]) + 1, parts[2]
            if sub in ("patch_embed", "pos_embed", "class_embed"):
                return "embeddings"
            if sub == "head":
                return "heads"
            return f"branch{r}"  # blocks, long skips, cascade merge
        if parts[0] == "cascades":
            return "cascade"
        return "conditioning" if parts[0] == "cond_embed" else parts[0]
