"""Forward/backward of the tiny presets and of every structural switch of the MRN and the transformer."""

import pytest
import torch

from dimr.models import PRESETS, build_model, resolve_model_config
from dimr.models.counting import count_params
from dimr.models.layers import pixel_shuffle_tokens, sincos_pos_embed, unpatchify

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = [n for n in PRESETS if n.startswith("tiny-")]


def _inputs(model, n=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, model.in_channels, model.resolution, model.resolution, generator=g)
    return (
        x,
        torch.linspace(-4, 4, n),
        torch.tensor([0, model.num_classes] * (n // 2)),
    )  # incl. the null class


def _forward_backward(model):
    x, c, y = _inputs(model)
    preds = model(x, c, y)
    sum(p.square().mean() for p in preds).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    return preds


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_forward_backward(name):
    torch.manual_seed(0)
    cfg = resolve_model_config(name)
    model = build_model(cfg)
    assert (model.in_channels, model.resolution, model.num_classes) == (1, 32, 10)
    preds = _forward_backward(model)
    sizes = [p.shape[-1] for p in preds]
    if cfg["type"] == "mrn":  # lowest resolution first, the last at full resolution
        assert sizes == [32 // p for p in cfg["patch_sizes"]]
    else:
        assert sizes == [32]
    assert all(p.shape[:2] == (2, 1) for p in preds)


def _mrn(**overrides):
    base = {"widths": [32, 16, 8], "depths": [3, 2, 2], "heads": [2, 0, 0], "resolution": 16}
    return build_model(resolve_model_config("tiny-dimr", {**base, **overrides}))


def test_mrn_structural_switches_run_and_cost_what_they_should():
    D2, D3 = 16, 8
    base = count_params(_mrn())
    # cascade merge by concatenation: one Linear(2D→D) per branch after the first
    assert count_params(_mrn(cascade_merge="concat")) - base == (2 * D2 * D2 + D2) + (2 * D3 * D3 + D3)
    assert count_params(_mrn(branch_skips=True)) - base == (2 * D2 * D2 + D2) + (2 * D3 * D3 + D3)
    # no long skips: N blocks instead of 2⌊N/2⌋+1, no Linear(2D→D)
    plain = _mrn(long_skips=False)
    assert [len(b.blocks) for b in plain.branches] == [3, 2, 2]
    assert [len(b.blocks) for b in _mrn().branches] == [3, 3, 3]
    assert all(b.skips is None for b in plain.branches)
    for model in [
        _mrn(cascade_merge="concat", branch_skips=True, cascade_features="last"),
        plain,
        _mrn(block_types=["convnext", "convnext", "convnext"]),  # Table 3: a ConvNeXt first branch
        _mrn(block_types=["transformer", "transformer", "convnext"], heads=[2, 2, 0]),
        _mrn(mlp="gelu", dropout=0.1, qkv_bias=True),
    ]:
        assert [p.shape[-1] for p in _forward_backward(model)] == [4, 8, 16]
    learned = _mrn(learn_sigma=True)
    assert [p.shape[1] for p in _forward_backward(learned)] == [1, 1, 2]
    last_only = _mrn(output_heads="last")
    assert [tuple(p.shape) for p in _forward_backward(last_only)] == [(2, 1, 16, 16)]


def test_two_branch_mrn_uses_its_patch_sizes():
    model = _mrn(
        widths=[16, 8],
        depths=[2, 2],
        heads=[2, 0],
        patch_sizes=[2, 1],
        block_types=["transformer", "convnext"],
    )
    assert [p.shape[-1] for p in _forward_backward(model)] == [8, 16]


def test_transformer_switches():
    base = {"width": 32, "depth": 3, "heads": 2, "resolution": 16}
    uvit = build_model(resolve_model_config("tiny-uvit", {**base, "pos_embed": "learned"}))
    assert len(uvit.blocks) == 3 and len(uvit.skips) == 1  # depth 3 → 1 in, 1 mid, 1 out
    assert uvit.pos_embed.shape[1] == 2 + 16  # U-ViT's learned table: positions for [label; time] too
    fixed = build_model(resolve_model_config("tiny-uvit", base))  # the tiny preset: sin-cos, patches only
    assert fixed.pos_embed.shape[1] == 16 and not isinstance(fixed.pos_embed, torch.nn.Parameter)
    dit = build_model(resolve_model_config("tiny-dit", {**base, "learn_sigma": True}))
    assert len(dit.blocks) == 3 and dit.skips is None
    assert "pos_embed" not in dict(dit.named_parameters())  # fixed sin-cos: a buffer
    for model, channels in [(uvit, 1), (dit, 2)]:
        (pred,) = _forward_backward(model)
        assert pred.shape == (2, channels, 16, 16)


def test_final_conv_dirac_init_is_the_identity_and_leaves_every_other_weight_alone():
    base = {"width": 32, "depth": 3, "heads": 2, "resolution": 16}
    torch.manual_seed(0)
    default = build_model(resolve_model_config("tiny-uvit", {**base, "final_conv_init": "pytorch"}))
    torch.manual_seed(0)
    dirac = build_model(resolve_model_config("tiny-uvit", {**base, "final_conv_init": "dirac"}))
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(dirac.head.conv(x), x, rtol=0, atol=0)
    assert not torch.allclose(default.head.conv(x), x)  # PyTorch's default: a random 3×3 filter
    a, b = default.state_dict(), dirac.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == ["head.conv.weight", "head.conv.bias"]
    with pytest.raises(Exception, match="final_conv_init"):
        resolve_model_config("tiny-uvit", {"final_conv_init": "zeros"})


def test_pixel_shuffle_matches_the_official_layout():
    """DiMR's PixelShuffleUpsample: reshape (B, H, W, r, r, C/r²), swap W and the first r, merge."""
    torch.manual_seed(0)
    B, G, r, D = 2, 3, 2, 5
    x = torch.randn(B, G * G, r * r * D)
    ref = x.reshape(B, G, G, r, r, D).transpose(2, 3).reshape(B, G * r, G * r, D)
    torch.testing.assert_close(pixel_shuffle_tokens(x, G, r), ref.reshape(B, -1, D))
    # upsampled token (i, j) comes from low-res token (i // r, j // r), sub-position (i % r, j % r)
    up = pixel_shuffle_tokens(x, G, r).reshape(B, G * r, G * r, D)
    i, j = 3, 4
    torch.testing.assert_close(up[:, i, j], x[:, (i // r) * G + j // r].reshape(B, r, r, D)[:, i % r, j % r])


def test_unpatchify_inverts_patch_layout_and_sincos_shape():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = 4
    tokens = x.reshape(2, 3, 2, p, 2, p).permute(0, 2, 4, 3, 5, 1).reshape(2, 4, p * p * 3)
    torch.testing.assert_close(unpatchify(tokens, p, 3), x)
    assert sincos_pos_embed(16, 4).shape == (1, 16, 16)


def test_model_moves_to_meta_and_back_for_paper_presets():
    with torch.device("meta"):
        model = build_model(resolve_model_config("dimr-m-3r"))
    x = torch.zeros(1, 3, 64, 64, device="meta")
    preds = model(x, torch.zeros(1, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))
    assert [tuple(p.shape) for p in preds] == [(1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64)]
