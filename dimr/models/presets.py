"""Model presets keyed by the paper's names (DiMR Tables 1, 3; official configs): full config dicts.

Branches are written (block, D, N blocks as configured, heads, patch): T = transformer, C = ConvNeXt.
Fields not in a row keep their dataclass default (config.py). `mlp_ratio` stays None in a preset (2 for
GLU, 4 for plain MLP) so that `--set mlp=gelu` gives the paper's ratio; the resolved config records it.
"""

import dataclasses

from dimr.models.config import MRNConfig, TransformerConfig

_BLOCK = {"T": "transformer", "C": "convnext"}


def _mrn(inp, branches, mlp, conditioning, **extra):
    C, res, classes = inp
    row = dict(
        in_channels=C, resolution=res, num_classes=classes, mlp=mlp, conditioning=conditioning, **extra
    )
    row.update(
        block_types=[_BLOCK[b[0]] for b in branches],
        widths=[b[1] for b in branches],
        depths=[b[2] for b in branches],
        heads=[b[3] for b in branches],
        patch_sizes=[b[4] for b in branches],
    )
    return {"type": "mrn", **dataclasses.asdict(MRNConfig(**row))}


def _tf(inp, patch, D, depth, heads, conditioning, style, **extra):
    C, res, classes = inp
    row = dict(
        in_channels=C,
        resolution=res,
        num_classes=classes,
        patch_size=patch,
        width=D,
        depth=depth,
        heads=heads,
        conditioning=conditioning,
    )
    row.update(_STYLE[style], learn_sigma=style in ("dit", "diffit"))  # DiT, DiffiT: 2·C outputs
    row.update(extra)
    return {"type": "transformer", **dataclasses.asdict(TransformerConfig(**row))}


# The single-branch families, as switches of one Transformer, with each official code's numerics:
# U-ViT's label table keeps nn.Embedding's N(0, 1) (libs/uvit.py); DiT's MLP uses the tanh GELU and
# DiT's initialize_weights (xavier-uniform, label table N(0, 0.02²)) (models.py). Latent DiffiT (arXiv v1
# §3.2.2, Fig. 4: like DiT, a ViT without up- or down-sampling, a linear final layer) in the official
# diffit/diffit.py: DiT's embedders, fixed sin-cos positions, qkv bias, tanh GELU and
# initialize_weights; TMSA (the `tmsa` mechanism) in every block with a relative position bias over the
# whole token grid (window = input_size // patch_size); FinalLayer LN → SiLU → Linear, zero-initialised.
# Not followed: the official bias table starts at trunc-normal(0.02), ours at zero (RelativePositionBias).
# fmt: off
_STYLE = {
    "uvit":   dict(class_token=True, long_skips=True, pos_embed="learned", final_conv=True, qkv_bias=False,
                   label_embed_init="normal-1"),
    "dit":    dict(class_token=False, long_skips=False, pos_embed="sincos", final_conv=False, qkv_bias=True,
                   gelu_approximate="tanh", init="dit", label_embed_init="normal"),
    "diffit": dict(class_token=False, long_skips=False, pos_embed="sincos", final_conv=False, qkv_bias=True,
                   gelu_approximate="tanh", init="dit", label_embed_init="normal", final_layer="diffit"),
}
# fmt: on

LAT256 = (4, 32, 1000)  # input (C, resolution, classes): SD-VAE latents of 256×256 ImageNet
LAT512 = (4, 64, 1000)  # SD-VAE latents of 512×512 ImageNet
IN64 = (3, 64, 1000)  # 64×64 ImageNet pixels
FMNIST = (1, 32, 10)  # the embedded Fashion-MNIST default, padded to 32×32

# fmt: off
# Branches, lowest resolution first: (block, D, N blocks as configured, heads, patch).
_XL2R   = [("T", 960, 39, 16, 2), ("C", 480, 20, 0, 1)]
_G2R    = [("T", 1152, 57, 16, 2), ("C", 576, 29, 0, 1)]
_XL3R   = [("T", 960, 39, 16, 4), ("C", 480, 20, 0, 2), ("C", 240, 20, 0, 1)]
_M3R    = [("T", 768, 15, 12, 4), ("C", 384, 8, 0, 2), ("C", 192, 8, 0, 1)]
_TINY3R = [("T", 64, 5, 4, 4), ("C", 32, 1, 0, 2), ("C", 16, 1, 0, 1)]  # 8×8, 16×16, 32×32 grids
_TINY2R = [("T", 64, 3, 4, 2), ("C", 16, 1, 0, 1)]  # 16×16, 32×32 grids

PRESETS: dict[str, dict] = {
    # ---- paper presets (counts checked against the papers in tests/test_models_counts.py) ----
    # name                      input   branches  mlp     conditioning
    "dimr-xl-2r":          _mrn(LAT256, _XL2R,    "glu",  "td-rmsnorm"),  # released config
    "dimr-g-2r":           _mrn(LAT256, _G2R,     "glu",  "td-rmsnorm"),  # released config
    "dimr-xl-3r":          _mrn(LAT512, _XL3R,    "glu",  "td-rmsnorm"),
    "dimr-m-3r":           _mrn(IN64,   _M3R,     "glu",  "td-ln"),       # Table 1 row 5/6
    "dimr-m-3r-noglu":     _mrn(IN64,   _M3R,     "gelu", "td-ln"),       # Table 1 row 4
    "mrn-m-3r-adaln-zero": _mrn(IN64,   _M3R,     "gelu", "adaln-zero"),  # Table 1 row 3
    # name                     input   patch D     depth heads conditioning   style
    "uvit-m-4":            _tf(IN64,   4,    768,  16,   12,   "time-token",  "uvit"),  # Table 1 row 1
    "uvit-m-4-adaln-zero": _tf(IN64,   4,    768,  16,   12,   "adaln-zero",  "uvit"),  # Table 1 row 2
    "uvit-h-2":            _tf(LAT256, 2,    1152, 28,   16,   "time-token",  "uvit", final_conv=False),
    "dit-xl-2":            _tf(LAT256, 2,    1152, 28,   16,   "adaln-zero",  "dit"),
    # Latent DiffiT, ImageNet 256: D 1152, depth 28, 16 heads, patch 2, MLP ratio 4, learned variance
    # (official diffit.py `Diffit`, "DiffiT-XL/2", which the released checkpoint loads into); its 561M are the
    # abstract's 16.88% fewer than DiT-XL/2's 675M, where depth 30 (the DiffiT class default) gives 601M.
    "diffit-xl-2":         _tf(LAT256, 2,    1152, 28,   16,   "tmsa",        "diffit"),
    # ---- tiny Fashion-MNIST presets: the roadmap rows of Table 1 (row 6 = tiny-dimr + multi-scale loss) ----
    # Every tiny preset takes fixed sin-cos positions (DiT's), not the official learned table: learned
    # positions start at trunc-normal(0.02) and, within a 100-kimg run, some seeds never learn to use
    # them (U-ViT, search seed 101: FID 97 learned vs 50 sin-cos, unguided; docs/TINY_RECIPE.md).
    # The two single-branch rows start U-ViT's final 3×3 conv (1 channel here) as the identity: at
    # PyTorch's default some seeds draw a filter whose frequency response nearly vanishes (min |H| 0.005-
    # 0.12 against 0.4-0.6), and those runs stay in a slow mode of speckle and patch-boundary lines (+ adaLN-
    # Zero search seed 101: FID 55 at 100 kimg, 36 at 200; 16 with the identity; docs/TINY_RECIPE.md).
    "tiny-uvit":           _tf(FMNIST, 4,    64,   5,    4,    "time-token",  "uvit", pos_embed="sincos",
                               final_conv_init="dirac"),
    "tiny-uvit-adaln-zero": _tf(FMNIST, 4,   64,   5,    4,    "adaln-zero",  "uvit", pos_embed="sincos",
                               final_conv_init="dirac"),
    "tiny-mrn-adaln-zero": _mrn(FMNIST, _TINY3R,  "gelu", "adaln-zero", pos_embed="sincos"),
    "tiny-mrn-tdln":       _mrn(FMNIST, _TINY3R,  "gelu", "td-ln",      pos_embed="sincos"),
    "tiny-dimr":           _mrn(FMNIST, _TINY3R,  "glu",  "td-ln",      pos_embed="sincos"),
    # ---- further tiny ablation presets ----
    "tiny-dimr-2r":        _mrn(FMNIST, _TINY2R,  "glu",  "td-rmsnorm", pos_embed="sincos"),
    "tiny-dit":            _tf(FMNIST, 4,    64,   5,    4,    "adaln-zero",  "dit", learn_sigma=False),
    "tiny-diffit":         _tf(FMNIST, 4,    64,   5,    4,    "tmsa",        "diffit", learn_sigma=False),
}
# fmt: on
