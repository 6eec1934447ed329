"""Official numerics as config settings: DiT's tanh GELU and init, U-ViT's label table, TD-RMSNorm at 0."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dimr.errors import ConfigError
from dimr.models import PRESETS, build_model, resolve_model_config
from dimr.models.conditioning import Modulation
from dimr.models.td_layernorm import TDRMSNorm

pytestmark = pytest.mark.usefixtures("one_thread")

_WIDE_TF = {"width": 384, "depth": 2, "heads": 6}  # XL-like fan-ins so the init statistics are tight


def _gelu_tanh(x):
    """GELU's tanh approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), written out."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _gelu_erf(x):
    """Exact GELU x·Φ(x) = 0.5·x·(1 + erf(x/√2))."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _std(t):
    return float(t.detach().double().std())


def _absmax(t):
    return float(t.detach().abs().max())


#################################################################################
#                                 GELU                                          #
#################################################################################


def test_dit_mlp_uses_the_tanh_gelu_and_uvit_mrn_the_exact_one():
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)
    assert float((_gelu_tanh(x) - _gelu_erf(x)).abs().max()) > 1e-4  # the two formulas are distinguishable
    dit = build_model(resolve_model_config("tiny-dit"))
    act = dit.blocks[0].mlp.act
    torch.testing.assert_close(act(x), _gelu_tanh(x), rtol=0, atol=1e-12)
    assert float((act(x) - _gelu_erf(x)).abs().max()) > 1e-4
    for preset in ("tiny-uvit", "tiny-dimr", "tiny-mrn-tdln"):
        model = build_model(resolve_model_config(preset))
        acts = [m for m in model.modules() if isinstance(m, nn.GELU)]
        assert acts and all(torch.allclose(a(x), _gelu_erf(x), rtol=0, atol=1e-12) for a in acts)
    mrn = build_model(resolve_model_config("tiny-dimr", {"gelu_approximate": "tanh"}))  # GEGLU too
    acts = [m for m in mrn.modules() if isinstance(m, nn.GELU)]
    assert acts and all(torch.allclose(a(x), _gelu_tanh(x), rtol=0, atol=1e-12) for a in acts)


def _dit_block_reference(blk, x, e):
    """Official DiTBlock.forward (DiT models.py) written out on the weights of our block."""
    N, L, D = x.shape
    h_, d = blk.attn.heads, blk.attn.head_dim
    shift1, scale1, gate1, shift2, scale2, gate2 = blk.modulation.proj(F.silu(e)).chunk(6, dim=1)
    h = F.layer_norm(x, (D,), eps=1e-6) * (1 + scale1[:, None]) + shift1[:, None]
    q, k, v = blk.attn.qkv(h).reshape(N, L, 3, h_, d).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v  # (N, h, L, d)
    x = x + gate1[:, None] * blk.attn.proj(a.transpose(1, 2).reshape(N, L, D))
    h = F.layer_norm(x, (D,), eps=1e-6) * (1 + scale2[:, None]) + shift2[:, None]
    return x + gate2[:, None] * blk.mlp.fc2(_gelu_tanh(blk.mlp.fc1(h)))


def test_dit_block_matches_the_official_block_formula():
    torch.manual_seed(0)
    cfg = resolve_model_config("tiny-dit", {"width": 32, "depth": 1, "heads": 2, "resolution": 16})
    model = build_model(cfg).double()
    blk = model.blocks[0]
    nn.init.normal_(blk.modulation.proj.weight, std=0.3)  # open the adaLN-Zero modulation and gates
    nn.init.normal_(blk.modulation.proj.bias, std=0.3)
    x, e = torch.randn(2, 16, 32, dtype=torch.float64) * 2, torch.randn(2, 32, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = blk(x, torch.zeros(2), e), _dit_block_reference(blk, x, e)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
        blk.mlp.act = nn.GELU()  # the exact GELU moves the output well past that tolerance
        assert float((blk(x, torch.zeros(2), e) - ref).abs().max()) > 1e-6


#################################################################################
#                               Initialisation                                  #
#################################################################################


def test_dit_init_is_xavier_uniform_with_zero_biases_and_adaln_zero():
    torch.manual_seed(0)
    model = build_model(resolve_model_config("tiny-dit", _WIDE_TF))
    D = _WIDE_TF["width"]
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"):
        w = linears[name].weight
        fan_out, fan_in = w.shape
        bound = math.sqrt(6 / (fan_in + fan_out))  # xavier-uniform U(−a, a), std a/√3
        assert _absmax(w) <= bound and _absmax(w) > 0.99 * bound
        assert _std(w) == pytest.approx(bound / math.sqrt(3), rel=0.02), name
    assert all(_absmax(m.bias) == 0 for m in linears.values() if m.bias is not None)
    # patch embedding like a Linear: xavier on the (D, C·p·p) view, bias 0
    w = model.patch_embed.weight
    bound = math.sqrt(6 / (w[0].numel() + D))
    assert _absmax(w) <= bound and _std(w) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert _absmax(model.patch_embed.bias) == 0
    # t-embedder MLP and label table N(0, 0.02²)
    for w in (
        model.cond_embed.mlp[0].weight,
        model.cond_embed.mlp[2].weight,
        model.cond_embed.class_embed.weight,
    ):
        assert _std(w) == pytest.approx(0.02, rel=0.05)
    # adaLN-Zero: every modulation (blocks and final layer) and the final linear exactly zero
    mods = [m for m in model.modules() if isinstance(m, Modulation)]
    assert len(mods) == 3
    for p in [q for m in mods for q in m.parameters()] + list(model.head.linear.parameters()):
        assert _absmax(p) == 0


def test_default_init_stays_trunc_normal_outside_dit():
    torch.manual_seed(0)
    uvit = build_model(resolve_model_config("tiny-uvit", _WIDE_TF))
    w = uvit.blocks[0].attn.qkv.weight
    assert _std(w) == pytest.approx(0.02, rel=0.02)  # U-ViT _init_weights: trunc_normal_(std=.02)
    mrn = build_model(resolve_model_config("tiny-dimr"))
    assert _std(mrn.branches[0].blocks[0].attn.qkv.weight) == pytest.approx(0.02, rel=0.05)
    assert _std(mrn.branches[0].class_embed.weight) == pytest.approx(0.02, rel=0.1)  # official Embedding


def test_uvit_label_embedding_keeps_pytorch_default_normal():
    torch.manual_seed(0)
    model = build_model(resolve_model_config("tiny-uvit", _WIDE_TF))
    w = model.class_embed.weight  # (11, 384): libs/uvit.py `label_emb`, not re-initialised
    assert _std(w) == pytest.approx(1.0, rel=0.05) and abs(float(w.detach().double().mean())) < 0.05
    old = build_model(resolve_model_config("tiny-uvit", {**_WIDE_TF, "label_embed_init": "trunc-normal"}))
    assert _std(old.class_embed.weight) == pytest.approx(0.02, rel=0.05)


def test_presets_carry_their_family_values_and_configs_check_them():
    for name, preset in PRESETS.items():
        dit = preset["type"] == "transformer" and not preset["class_token"]  # the "dit" style
        uvit = preset["type"] == "transformer" and preset["class_token"]
        assert preset["gelu_approximate"] == ("tanh" if dit else "none"), name
        assert preset["init"] == ("dit" if dit else "trunc-normal"), name
        expected = "normal" if dit else "normal-1" if uvit else "trunc-normal"
        assert preset["label_embed_init"] == expected, name
    # a saved config without the new keys keeps the behaviour it was trained with (dataclass defaults)
    old = dict(resolve_model_config("tiny-dit"))
    for key in ("gelu_approximate", "init", "label_embed_init"):
        old.pop(key)
    model = build_model(old)
    assert model.cfg.gelu_approximate == "none" and model.cfg.init == "trunc-normal"
    for key, bad, choices in [
        ("gelu_approximate", "erf", "none, tanh"),
        ("init", "xavier", "trunc-normal, dit"),
        ("label_embed_init", "zeros", "trunc-normal, normal, normal-1"),
    ]:
        with pytest.raises(ConfigError, match=f"{key}='{bad}'.*{choices}"):
            resolve_model_config("tiny-dit", {key: bad})


#################################################################################
#                                 TD-RMSNorm                                    #
#################################################################################


def test_td_rmsnorm_is_zero_safe_and_keeps_the_mean_square_forward():
    torch.manual_seed(0)
    norm = TDRMSNorm(16)
    for p in norm.parameters():
        p.data.normal_()
    x, c = torch.randn(4, 7, 16) * 3, torch.linspace(-4, 4, 4)
    old = x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8) * norm.gamma(c)[:, None]
    torch.testing.assert_close(norm(x, c), old, rtol=0, atol=1e-6)
    # an all-zero token: the mean-square form's sqrt'(0) gives NaN; norm(2) a finite gradient
    x = x.clone()
    x[1, 3] = 0
    x.requires_grad_(True)
    norm(x, c).square().sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in norm.parameters())
    x.grad = None
    (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8)).square().sum().backward()
    assert torch.isnan(x.grad[1, 3]).all()  # the old formula (the test could fail)


def test_tiny_presets_use_fixed_sincos_positions_and_paper_presets_keep_the_official_table():
    from dimr.models.layers import sincos_pos_embed

    for name, preset in PRESETS.items():
        official = "sincos" if preset["type"] == "transformer" and not preset["class_token"] else "learned"
        assert preset["pos_embed"] == ("sincos" if name.startswith("tiny-") else official), name
    model = build_model(resolve_model_config("tiny-dimr"))
    names = {n for n, _ in model.named_parameters()}
    assert not any("pos_embed" in n for n in names)  # a buffer, not trained
    for b in model.branches:
        assert torch.equal(b.pos_embed, sincos_pos_embed(b.pos_embed.shape[-1], b.grid))
    learned = build_model(resolve_model_config("tiny-dimr", {"pos_embed": "learned"}))
    assert sum("pos_embed" in n for n, _ in learned.named_parameters()) == len(learned.branches)
    with pytest.raises(ConfigError, match="pos_embed"):
        resolve_model_config("tiny-dimr", {"pos_embed": "rope"})
