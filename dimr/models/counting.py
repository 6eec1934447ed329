"""Parameter and GMAC counts as DiT and DiMR report them (MACs of one forward pass, batch 1)."""

import warnings

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dimr.models import build_model


def count_params(model: nn.Module) -> int:
    """Number of parameters, sum(p.numel()) (fixed sin-cos positions are a buffer and not counted)."""
    return sum(p.numel() for p in model.parameters())


def param_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per component: branchN/blocks, cascade, heads, embeddings, conditioning.

    `conditioning` gathers every module tagged `is_conditioning` wherever it sits (TD-norm parameters,
    adaLN modulations, the time/class MLP, TMSA's time projections), i.e. the cost of time conditioning.
    """
    owner = {}
    for mod_name, m in model.named_modules():
        if getattr(m, "is_conditioning", False):
            for p_name, _ in m.named_parameters(prefix=mod_name):
                owner[p_name] = "conditioning"
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = owner.get(name) or model.component_of(name)
        counts[key] = counts.get(key, 0) + p.numel()
    return dict(sorted(counts.items()))


def _example_inputs(model, device, batch=1):
    c_in = model.in_channels + model.cond_channels  # a cascade also sees its conditioning image
    x = torch.zeros(batch, c_in, model.resolution, model.resolution, device=device)
    c = torch.zeros(batch, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    return x, c, y


def count_gmacs(cfg: dict) -> float:
    """GMACs of one forward pass at batch 1: FlopCounterMode FLOPs / 2 / 1e9, built on the meta device."""
    try:
        with torch.device("meta"):
            model = build_model(cfg)
        inputs = _example_inputs(model, "meta")
        device = "meta"
    except (NotImplementedError, RuntimeError) as err:  # an op without a meta kernel: count on the CPU
        warnings.warn(f"meta-device build failed ({err}); counting on the CPU instead", stacklevel=2)
        model, device = build_model(cfg), "cpu"
        inputs = _example_inputs(model, device)
    # The math backend decomposes attention into bmm's, which FlopCounterMode counts on every device.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        try:
            model(*inputs)
        except (NotImplementedError, RuntimeError) as err:
            if device != "meta":
                raise
            warnings.warn(f"meta-device forward failed ({err}); counting on the CPU instead", stacklevel=2)
            model = build_model(cfg)
            model(*_example_inputs(model, "cpu"))
    return counter.get_total_flops() / 2 / 1e9
