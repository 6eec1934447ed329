"""Single-branch diffusion transformer: U-ViT (Bao et al. 2023), DiT (Peebles & Xie 2023) and latent DiffiT
(Hatamizadeh et al. 2023) as switches.

U-ViT: tokens [label; time; patches] with learned positions, long skips, LN → Linear → unpatchify → 3×3
conv. DiT: patches with fixed sin-cos positions, adaLN-Zero from e = MLP(sinusoid(t)) + Emb(y), no skips,
modulated final layer, learned variance. DiffiT: DiT's layout with TMSA in every block (q, k, v += W_t·e,
relative position bias) and an unconditioned final layer. Any conditioning mechanism of the registry plugs in.
"""

import torch
import torch.nn as nn

from dimr.models.blocks import LinearHead, TransformerBlock, run_blocks
from dimr.models.conditioning import ConditionEmbedding, Modulation, get_mechanism, sinusoidal_embedding
from dimr.models.config import TransformerConfig
from dimr.models.layers import (
    init_label_embed,
    init_linear,
    init_patch_embed_as_linear,
    patchify_tokens,
    sincos_pos_embed,
)
from dimr.models.td_layernorm import TimeDependentParameter, td_nodecay_names


class Transformer(nn.Module):
    """Single-branch transformer; forward returns a one-element list (full resolution)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg, self.mech = cfg, get_mechanism(cfg.conditioning)
        self.in_channels, self.resolution, self.num_classes = cfg.in_channels, cfg.resolution, cfg.num_classes
        self.cond_channels = cfg.cond_channels  # CDM §3: the low-resolution image, concatenated to x
        D, self.grid = cfg.width, cfg.resolution // cfg.patch_size
        L = self.grid * self.grid
        c_in = cfg.in_channels + cfg.cond_channels
        self.patch_embed = nn.Conv2d(c_in, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        # Table of num_classes + 1 entries: the last is the null class for classifier-free guidance.
        self.class_embed = nn.Embedding(cfg.num_classes + 1, D) if cfg.class_token else None
        self.n_extra = int(cfg.class_token) + int(self.mech.time_token)
        if cfg.pos_embed == "learned":  # U-ViT: learned positions for extra tokens and patches
            self.pos_embed = nn.Parameter(torch.zeros(1, self.n_extra + L, D))
        else:  # DiT: fixed sin-cos positions of the patches (a buffer: not trained, not counted)
            self.register_buffer("pos_embed", sincos_pos_embed(D, self.grid), persistent=False)
        class_in_e = None if cfg.class_token else cfg.num_classes
        self.cond_embed = None
        if self.mech.embedding:  # adaLN, TMSA: e = MLP(sinusoid(c)) (+ Emb(y) without a class token)
            self.cond_embed = ConditionEmbedding(D, class_in_e, cfg.sinusoid_scale)
        n_blocks = 2 * (cfg.depth // 2) + 1 if cfg.long_skips else cfg.depth
        blk = dict(heads=cfg.heads, mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio, mech=self.mech, cond_dim=D)
        blk.update(qkv_bias=cfg.qkv_bias, grid=self.grid, n_extra=self.n_extra, dropout=cfg.dropout)
        blk.update(gelu_approximate=cfg.gelu_approximate)
        self.blocks = nn.ModuleList([TransformerBlock(D, **blk) for _ in range(n_blocks)])
        self.skips = None
        if cfg.long_skips:  # U-ViT: x = Linear(2D→D)(concat[x, skip]) before each out block
            self.skips = nn.ModuleList([nn.Linear(2 * D, D) for _ in range(n_blocks // 2)])
        out_ch = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.head = LinearHead(D, cfg.patch_size, out_ch, self.mech, D, cfg.final_conv, cfg.final_layer)
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
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cfg.init == "dit":  # DiT models.py initialize_weights
            init_patch_embed_as_linear(self.patch_embed)
            if self.cond_embed is not None:  # t_embedder.mlp[0] and mlp[2] weights N(0, 0.02²)
                for lin in self.cond_embed.mlp[::2]:
                    nn.init.normal_(lin.weight, std=0.02)
        if self.mech.zero_init:
            # adaLN-Zero (DiT): zero every modulation (and, below, the final linear layer).
            for m in self.modules():
                if isinstance(m, Modulation):
                    nn.init.zeros_(m.proj.weight)
                    nn.init.zeros_(m.proj.bias)
        if self.mech.zero_init or self.cfg.final_layer == "diffit":  # DiT; DiffiT's _initialize_weights too
            nn.init.zeros_(self.head.linear.weight)
            nn.init.zeros_(self.head.linear.bias)
        if self.head.conv is not None and self.cfg.final_conv_init == "dirac":  # after the default init,
            nn.init.dirac_(self.head.conv.weight)  # which drew from the RNG: the other weights are unchanged
            nn.init.zeros_(self.head.conv.bias)

    def forward(self, x, c_noise, y):
        """x (N, C + cond_channels, H, W), c_noise (N,), y (N,) → [(N, C_out, H, W)]."""
        e = self.cond_embed(c_noise, y) if self.cond_embed is not None else None  # (N, D)
        h = patchify_tokens(self.patch_embed(x))  # (N, L, D)
        extras = []
        if self.class_embed is not None:
            extras.append(self.class_embed(y)[:, None])  # (N, 1, D)
        if self.mech.time_token:  # U-ViT: the sinusoidal embedding itself is the token (no MLP)
            extras.append(
                sinusoidal_embedding(c_noise * self.cfg.sinusoid_scale, h.shape[-1]).to(h.dtype)[:, None]
            )
        if self.cfg.pos_embed == "learned":
            h = torch.cat(extras + [h], dim=1) + self.pos_embed  # (N, n_extra + L, D)
        else:
            h = torch.cat(extras + [h + self.pos_embed.to(h.dtype)], dim=1)  # (N, n_extra + L, D)
        h = run_blocks(self.blocks, self.skips, h, c_noise, e)  # (N, n_extra + L, D)
        return [self.head(h[:, self.n_extra :], c_noise, e)]  # [(N, C_out, H, W)]

    def no_weight_decay_params(self) -> set[str]:
        """TD-LN w and b (official `nodecay_weight`, `nodecay_bias`); all else keeps weight decay."""
        return td_nodecay_names(self)

    def component_of(self, name: str) -> str:
        """Component of a parameter for counting.param_breakdown (conditioning is sorted out before)."""
        top = name.split(".")[0]
        if top in ("patch_embed", "pos_embed", "class_embed"):
            return "embeddings"
        if top == "head":
            return "heads"
        if top == "cond_embed":
            return "conditioning"
        return "blocks"  # blocks and long skips
