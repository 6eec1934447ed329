"""Time conditioning: TD-LN/TD-RMSNorm semantics, adaLN-Zero identity at init, every mechanism, DiffiT."""

import pytest
import torch
import torch.nn.functional as F

from dimr.errors import ConfigError
from dimr.models import CONDITIONINGS, build_model, resolve_model_config
from dimr.models.blocks import ConvNeXtBlock, TransformerBlock
from dimr.models.conditioning import get_mechanism
from dimr.models.counting import param_breakdown
from dimr.models.layers import unpatchify
from dimr.models.td_layernorm import TDLayerNorm, TDRMSNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_td_ln_at_init_is_layernorm_exactly():
    torch.manual_seed(0)
    norm = TDLayerNorm(16)
    x, c = torch.randn(4, 7, 16) * 3 + 1, torch.linspace(-4, 4, 4)
    assert torch.equal(norm(x, c), F.layer_norm(x, (16,), eps=1e-5))
    assert sum(p.numel() for p in norm.parameters()) == 8 * 16  # DiMR §3.2: 8·D per TD-LN
    assert sum(p.numel() for p in TDRMSNorm(16).parameters()) == 4 * 16


def test_td_ln_follows_the_sigmoid_interpolation():
    """γ(c) = p1 + sigmoid(c·(1 + w) + b)·(p0 − p1), per channel, and the same for β (DiMR §3.2)."""
    torch.manual_seed(0)
    norm = TDLayerNorm(8)
    for p in norm.parameters():
        p.data.normal_()
    x, c = torch.randn(3, 5, 8), torch.tensor([-3.0, 0.5, 2.0])

    def tdp(t):
        s = torch.sigmoid(c[:, None] * (1 + t.w) + t.b)
        return t.p1 + s * (t.p0 - t.p1)

    expected = F.layer_norm(x, (8,)) * tdp(norm.gamma)[:, None] + tdp(norm.beta)[:, None]
    torch.testing.assert_close(norm(x, c), expected)
    # TD-RMSNorm: scale only, eps outside the square root (official code)
    rms = TDRMSNorm(8)
    for p in rms.parameters():
        p.data.normal_()
    expected = x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 1e-8) * tdp(rms.gamma)[:, None]
    torch.testing.assert_close(rms(x, c), expected)


def test_adaln_zero_blocks_are_identity_at_init():
    torch.manual_seed(0)
    mech = get_mechanism("adaln-zero")
    blocks = [
        TransformerBlock(32, 4, "gelu", 4.0, mech, cond_dim=24, qkv_bias=True, grid=4, n_extra=1),
        ConvNeXtBlock(32, "glu", 2.0, mech, cond_dim=24, grid=4),
    ]
    x, e = torch.randn(2, 17, 32), torch.randn(2, 24)
    for block in blocks:
        for m in block.modules():  # the model's initialize_weights zeroes every modulation
            if type(m).__name__ == "Modulation":
                torch.nn.init.zeros_(m.proj.weight)
                torch.nn.init.zeros_(m.proj.bias)
        xb = x if isinstance(block, TransformerBlock) else x[:, 1:]
        assert torch.equal(block(xb, torch.zeros(2), e), xb)
    # and inside a built model (the zero-init step of initialize_weights)
    model = build_model(resolve_model_config("tiny-mrn-adaln-zero", _SMALL_MRN))
    x, c, y = torch.randn(2, 1, 16, 16), torch.randn(2), torch.tensor([0, 10])
    h = torch.randn(2, 8 * 8, 16)  # branch 2: an 8×8 grid of width 16
    assert torch.equal(model.branches[1].blocks[0](h, c, model.cond_embed(c, y)), h)
    with torch.no_grad():
        assert all(float(p.abs().max()) == 0 for p in model(x, c, y))  # zero-initialised heads


_SMALL_MRN = {"widths": [32, 16, 8], "depths": [2, 1, 1], "heads": [2, 0, 0], "resolution": 16}
_SMALL_TF = {"width": 32, "depth": 2, "heads": 2, "resolution": 16}
NETS = {
    "mrn": ("tiny-dimr", _SMALL_MRN),
    "mrn-convnext-first": ("tiny-dimr", {**_SMALL_MRN, "block_types": ["convnext"] * 3}),
    "transformer": ("tiny-uvit", _SMALL_TF),
}


def _build(net, conditioning, **extra):
    preset, overrides = NETS[net]
    overrides = {**overrides, "conditioning": conditioning, **extra}
    return build_model(resolve_model_config(preset, overrides))


def _adam_steps(model, steps=3, lr=1e-2):
    """A few Adam steps on a random regression target, with c spread over [-4, 4]."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.randn(8, 1, model.resolution, model.resolution, generator=g)
    y = torch.randint(0, 11, (8,), generator=g)
    c = torch.linspace(-4, 4, 8)
    targets = [torch.randn(o.shape, generator=g) for o in model(x, c, y)]
    for _ in range(steps):
        loss = sum(F.mse_loss(o, t) for o, t in zip(model(x, c, y), targets, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _c_sensitivity(model):
    torch.manual_seed(2)
    x, y = torch.randn(2, 1, model.resolution, model.resolution), torch.tensor([3, 10])
    with torch.no_grad():
        a = model(x, torch.full((2,), -2.0), y)
        b = model(x, torch.full((2,), 2.0), y)
    return max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("conditioning", list(CONDITIONINGS))
def test_every_mechanism_reads_c_noise_and_trains_in_both_nets(net, conditioning):
    torch.manual_seed(0)
    class_token = conditioning in ("time-token", "td-ln", "td-rmsnorm")  # adaLN/TMSA: class through e
    model = _build(net, conditioning, class_token=class_token)
    mech = get_mechanism(conditioning)
    at_init = _c_sensitivity(model)
    if mech.zero_init or mech.block_norm.startswith("td"):
        assert at_init == 0.0  # TD norms start as plain norms; adaLN-Zero starts with zero heads
    else:
        assert at_init > 1e-5
    # Zero-initialised mechanisms need training before time matters. adaLN-Zero: step 1 opens the
    # heads, step 2 the gates, so by step 3 every parameter gets a gradient (DDP needs no unused ones).
    _adam_steps(model, steps=3)
    assert _c_sensitivity(model) > 1e-5
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().max()) == 0]
    assert not no_grad, no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_no_weight_decay_lists_exactly_the_td_w_and_b():
    model = build_model(resolve_model_config("tiny-dimr"))
    names = model.no_weight_decay_params()
    params = dict(model.named_parameters())
    assert names and names <= set(params)
    assert all(n.endswith((".w", ".b")) for n in names)
    td = {n for n in params if n.endswith((".p0", ".p1", ".w", ".b"))}
    assert names == {n for n in td if n.endswith((".w", ".b"))}
    assert build_model(resolve_model_config("tiny-uvit")).no_weight_decay_params() == set()


def test_unknown_conditioning_lists_the_choices():
    with pytest.raises(ConfigError, match="time-token.*adaln-zero.*td-rmsnorm.*tmsa"):
        resolve_model_config("tiny-dimr", {"conditioning": "film"})
    with pytest.raises(ConfigError, match="class_token"):  # TD-LN alone has no path for the label
        resolve_model_config("tiny-dimr", {"class_token": False})


def test_diffit_blocks_have_tmsa_and_a_bias_table_and_no_adaln():
    """Each block: W_t (3D×D) + b_t (3D) on q, k, v, a (2G−1)²×heads table, LN without affine, no adaLN."""
    cfg = resolve_model_config("tiny-diffit", {"resolution": 16})
    model = build_model(cfg)
    D, heads, G = cfg["width"], cfg["heads"], 16 // cfg["patch_size"]
    assert len(model.blocks) == cfg["depth"] and model.n_extra == 0  # no class or time token
    for blk in model.blocks:
        assert blk.time_qkv.proj.weight.shape == (3 * D, D) and blk.time_qkv.proj.bias.shape == (3 * D,)
        assert blk.rel_bias.table.shape == ((2 * G - 1) ** 2, heads)
        assert blk.modulation is None and blk.attn.qkv.bias is not None
        for norm in (blk.norm1, blk.norm2):
            assert norm.eps == 1e-6 and not list(norm.parameters())
    embedders = (256 * D + D) + (D * D + D) + (cfg["num_classes"] + 1) * D  # time MLP + label table
    assert param_breakdown(model)["conditioning"] == cfg["depth"] * (3 * D * D + 3 * D) + embedders
    # the final layer: LN (no affine) → SiLU → Linear, no time input (official diffit.py FinalLayer)
    head = model.head
    assert head.modulation is None and not list(head.norm.parameters())
    torch.nn.init.normal_(head.linear.weight)
    h = torch.randn(2, G * G, D)
    expected = F.linear(F.silu(F.layer_norm(h, (D,), eps=1e-6)), head.linear.weight, head.linear.bias)
    torch.testing.assert_close(head(h, None, None), unpatchify(expected, head.patch, head.out_channels))


def test_tiny_diffit_runs_and_trains_its_time_projection_and_position_bias():
    torch.manual_seed(0)
    model = build_model(resolve_model_config("tiny-diffit", {"resolution": 16}))
    x, c, y = torch.randn(2, 1, 16, 16), torch.randn(2), torch.tensor([3, 10])  # 10: the null class
    with torch.no_grad():
        (out,) = model(x, c, y)
    assert out.shape == (2, 1, 16, 16)
    assert float(out.abs().max()) == 0  # the zero-initialised final linear (official diffit.py)
    _adam_steps(model, steps=2)  # step 1 opens the final linear, so step 2's gradients reach every block
    for blk in model.blocks:
        for p in (blk.time_qkv.proj.weight, blk.time_qkv.proj.bias, blk.rel_bias.table):
            assert p.grad is not None and float(p.grad.abs().max()) > 0
    assert _c_sensitivity(model) > 1e-5
