"""Model configs: one dataclass per net type, a comment per field; unknown keys and wrong types are errors."""

import dataclasses
import typing
from dataclasses import dataclass, field

from dimr.config import dataclass_from_dict
from dimr.errors import ConfigError
from dimr.models.conditioning import CONDITIONINGS

BLOCK_TYPES = ("transformer", "convnext")
MLP_TYPES = ("glu", "gelu")
GELU_APPROXIMATIONS = ("none", "tanh")  # nn.GELU(approximate=...): exact erf | DiT's tanh formula
INITS = ("trunc-normal", "dit")  # weight init schemes of initialize_weights (layers.init_linear)
LABEL_EMBED_INITS = ("trunc-normal", "normal", "normal-1")  # layers.init_label_embed
FINAL_LAYERS = ("mechanism", "diffit")  # blocks.LinearHead: the mechanism's head | DiffiT's FinalLayer


@dataclass
class MRNConfig:
    """Multi-resolution network (DiMR §3.1). Per-branch lists run from the lowest resolution up."""

    in_channels: int = 4  # C of the input (4 for SD-VAE latents, 3 for pixels, 1 for Fashion-MNIST)
    cond_channels: int = 0  # extra input channels appended to x (a cascade's upsampled image); out: C
    resolution: int = 32  # H = W of the input
    num_classes: int = 1000  # real classes; label `num_classes` is the null class (CFG)
    block_types: list[str] = field(default_factory=lambda: ["transformer", "convnext"])  # per branch
    widths: list[int] = field(default_factory=lambda: [960, 480])  # D_r per branch
    depths: list[int] = field(default_factory=lambda: [39, 20])  # N_r as configured (long skips: 2⌊N/2⌋+1)
    heads: list[int] = field(default_factory=lambda: [16, 0])  # attention heads per branch (0: ConvNeXt)
    patch_sizes: list[int] = field(default_factory=lambda: [2, 1])  # p_r; DiMR uses 2^(R−r)
    mlp: str = "glu"  # "glu" (GEGLU, DiMR) | "gelu" (plain MLP, U-ViT/DiT)
    mlp_ratio: float | None = None  # hidden width / D; None: 2 for glu (DiMR), 4 for gelu
    kernel_size: int = 7  # ConvNeXt depthwise kernel
    conditioning: str = "td-rmsnorm"  # time mechanism (CONDITIONINGS); td-ln | td-rmsnorm = the block norm
    sinusoid_scale: float = 250.0  # sinusoids see c·scale: c ∈ [−4, 4] → [−1000, 1000], DDPM's t range
    class_token: bool = True  # class as a prepended token of transformer branches; else through adaLN's e
    long_skips: bool = True  # U-ViT long skips inside each branch
    cascade_features: str = "all"  # "all": patchified input + every block output (official) | "last"
    cascade_merge: str = "add"  # cascade joins the next branch's input: "add" | "concat" (Linear 2D→D)
    # Table 3's "skip between branches", as we read it: Linear(2D→D)(concat[last features, cascade]) before
    # the head of every branch after the first (the paper gives no formula; off in DiMR).
    branch_skips: bool = False
    output_heads: str = "all"  # "all": one prediction per branch (multi-scale loss) | "last": full res only
    qkv_bias: bool = False  # bias of the qkv projection (False in DiMR and U-ViT)
    learn_sigma: bool = False  # last head also predicts the variance (2·C channels)
    dropout: float = 0.0  # dropout on residual branches (official `dropout_prob`)
    gelu_approximate: str = "none"  # MLP GELU: "none" (exact; official nn.GELU()) | "tanh" (DiT's)
    init: str = "trunc-normal"  # "trunc-normal" (0.02, official Linear) | "dit" (as in TransformerConfig)
    label_embed_init: str = "trunc-normal"  # class tables (as TransformerConfig); official Embedding: 0.02
    pos_embed: str = "learned"  # every branch's positions: "learned" (official, trunc-normal 0.02) | "sincos"

    def validate(self, where: str = ""):
        """Check values (types are checked by from_dict)."""
        R = len(self.widths)
        for name in ("block_types", "depths", "heads", "patch_sizes"):
            if len(getattr(self, name)) != R:
                n = len(getattr(self, name))
                raise ConfigError(f"{name} has {n} entries but widths has {R}; give one per branch")
        _choice("mlp", self.mlp, MLP_TYPES)
        _choice("conditioning", self.conditioning, tuple(CONDITIONINGS))
        _choice("cascade_features", self.cascade_features, ("all", "last"))
        _choice("pos_embed", self.pos_embed, ("learned", "sincos"))
        _choice("cascade_merge", self.cascade_merge, ("add", "concat"))
        _choice("output_heads", self.output_heads, ("all", "last"))
        rows = zip(self.block_types, self.widths, self.depths, self.heads, self.patch_sizes)
        for r, (bt, d, n, h, p) in enumerate(rows):
            _choice(f"block_types[{r}]", bt, BLOCK_TYPES)
            if d <= 0 or n <= 0 or p <= 0 or self.resolution % p:
                msg = "width, depth and patch must be positive and the patch must divide"
                raise ConfigError(f"branch {r + 1}: {msg} resolution {self.resolution}")
            if bt == "transformer" and (h <= 0 or d % h):
                raise ConfigError(f"branch {r + 1}: heads={h} must be positive and divide width {d}")
            if r and (self.patch_sizes[r - 1] % p):
                raise ConfigError(f"patch_sizes {self.patch_sizes}: each must be a multiple of the next")
        if self.patch_sizes[-1] != 1:
            # Each head is a 3x3 conv on its token grid (official Stage.output_layer): the last branch
            # predicts the full-resolution image only with one token per pixel.
            raise ConfigError(f"patch_sizes {self.patch_sizes}: the last (highest-resolution) branch needs "
                              f"patch 1, its head predicts on its token grid; e.g. "
                              f"{[p // self.patch_sizes[-1] for p in self.patch_sizes]}")
        _check_common(self)


@dataclass
class TransformerConfig:
    """Single-branch transformer: U-ViT (time token, long skips) to DiT (adaLN-Zero, no skips) by switches."""

    in_channels: int = 4  # C of the input
    cond_channels: int = 0  # extra input channels appended to x (a cascade's upsampled image); out: C
    resolution: int = 32  # H = W of the input
    num_classes: int = 1000  # real classes; label `num_classes` is the null class (CFG)
    patch_size: int = 2  # p of the patch embedding
    width: int = 1152  # D
    depth: int = 28  # blocks as configured (2⌊N/2⌋+1 with long skips: U-ViT depth 16 → 17 blocks)
    heads: int = 16  # attention heads
    mlp: str = "gelu"  # "gelu" | "glu"
    mlp_ratio: float | None = None  # hidden width / D; None: 2 for glu, 4 for gelu
    conditioning: str = "adaln-zero"  # time mechanism (conditioning.CONDITIONINGS)
    sinusoid_scale: float = 250.0  # sinusoidal embeddings see c·scale: c ∈ [−4, 4] → [−1000, 1000]
    class_token: bool = False  # class as a token (U-ViT); else through adaLN's e (DiT)
    long_skips: bool = False  # U-ViT long skips
    pos_embed: str = "sincos"  # "learned" (U-ViT, covers the extra tokens too) | "sincos" (DiT, fixed buffer)
    final_conv: bool = False  # U-ViT's 3×3 conv after unpatchify
    # Its initial weights: "pytorch" (the official libs/uvit.py leaves the conv at PyTorch's default) |
    # "dirac" (the identity kernel, zero bias). With one image channel the default is a random 3×3
    # filter whose frequency response can come close to zero; the network then has to learn to invert
    # it, and at tiny scale such seeds stay in a slow mode of speckle and patch-boundary lines.
    final_conv_init: str = "pytorch"
    # "mechanism": the conditioning's head norm (adaLN modulates it) → Linear; "diffit": LN (no affine, eps
    # 1e-6) → SiLU → Linear, unconditioned, the Linear zero-initialised (official diffit.py FinalLayer).
    final_layer: str = "mechanism"
    qkv_bias: bool = True  # DiT (timm) True; U-ViT False
    learn_sigma: bool = True  # predict the variance too (2·C output channels; DiT)
    dropout: float = 0.0  # dropout on residual branches
    # DiT's MLP uses nn.GELU(approximate="tanh") (official DiT models.py, DiTBlock); U-ViT the exact GELU.
    gelu_approximate: str = "none"  # "none" (exact erf) | "tanh"
    # "dit": DiT's initialize_weights (xavier-uniform Linear and patch embedding, N(0, 0.02²) t-embedder MLP);
    # "trunc-normal": trunc-normal(0.02) Linear weights (U-ViT's _init_weights). Biases are zero in both.
    init: str = "trunc-normal"
    # Class tables: "trunc-normal" (0.02) | "normal" (N(0, 0.02²), DiT) | "normal-1" (N(0, 1): U-ViT leaves
    # nn.Embedding at PyTorch's default, official libs/uvit.py `label_emb` is not touched by _init_weights).
    label_embed_init: str = "trunc-normal"

    def validate(self, where: str = ""):
        """Check values (types are checked by from_dict)."""
        _choice("mlp", self.mlp, MLP_TYPES)
        _choice("conditioning", self.conditioning, tuple(CONDITIONINGS))
        _choice("pos_embed", self.pos_embed, ("learned", "sincos"))
        _choice("final_layer", self.final_layer, FINAL_LAYERS)
        _choice("final_conv_init", self.final_conv_init, ("pytorch", "dirac"))
        if self.patch_size <= 0 or self.resolution % self.patch_size:
            raise ConfigError(f"patch_size={self.patch_size} must be positive and divide {self.resolution}")
        if self.width <= 0 or self.depth <= 0 or self.heads <= 0 or self.width % self.heads:
            raise ConfigError(
                f"width={self.width}, depth={self.depth}, heads={self.heads}: heads must divide D"
            )
        _check_common(self)


CONFIG_TYPES = {"mrn": MRNConfig, "transformer": TransformerConfig}


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_common(cfg):
    _choice("gelu_approximate", cfg.gelu_approximate, GELU_APPROXIMATIONS)
    _choice("init", cfg.init, INITS)
    _choice("label_embed_init", cfg.label_embed_init, LABEL_EMBED_INITS)
    if cfg.in_channels <= 0 or cfg.resolution <= 0 or cfg.num_classes < 0 or cfg.cond_channels < 0:
        raise ConfigError("in_channels and resolution must be positive, num_classes and cond_channels >= 0")
    if cfg.mlp_ratio is None:
        cfg.mlp_ratio = 2.0 if cfg.mlp == "glu" else 4.0  # DiMR's GEGLU: hidden 2D; plain MLP: 4D
    if cfg.mlp_ratio <= 0 or not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"mlp_ratio={cfg.mlp_ratio} must be > 0 and dropout={cfg.dropout} in [0, 1)")
    mech = CONDITIONINGS[cfg.conditioning]
    if not cfg.class_token and not mech.embedding:
        raise ConfigError(
            f"conditioning={cfg.conditioning!r} has no conditioning vector, so the class label needs "
            "class_token=true (or use adaln, adaln-zero or tmsa)"
        )


#################################################################################
#                        dict ↔ dataclass with type checks                     #
#################################################################################


def field_types(cls) -> dict[str, typing.Any]:
    """Map field name → annotated type of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls, d: dict):
    """Build and validate a model config dataclass (dimr.config's validator: unknown keys and wrong types
    are errors naming the key and the valid keys)."""
    return dataclass_from_dict(cls, d, "model")



