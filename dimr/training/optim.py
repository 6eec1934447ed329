"""AdamW with the paper's parameter groups, the learning-rate schedule and the EMA."""

import math

import torch

from dimr.config import TrainConfig


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW (paper §5); TD-LN's w and b are excluded from weight decay (official DiMR code)."""
    no_decay = model.no_weight_decay_params() if hasattr(model, "no_weight_decay_params") else set()
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda  # fused kernels exist for CUDA only
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), fused=fused)


def learning_rate(train: TrainConfig, cur_nimg: int) -> float:
    """Linear warm-up over warmup_kimg, then constant (paper: 5K steps) or, with `lr_decay: cosine`,
    a half cosine from lr down to 0 at total_kimg (SGDR, Loshchilov & Hutter 2017, without restarts):
    a run too short for its EMA to average out the lr's noise ends at a small step size instead."""
    warmup = train.warmup_kimg * 1000
    if warmup > 0 and cur_nimg < warmup:
        return train.lr * cur_nimg / warmup
    if train.lr_decay == "cosine":
        total = train.total_kimg * 1000
        progress = min(max((cur_nimg - warmup) / max(total - warmup, 1.0), 0.0), 1.0)
        return train.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr


def ema_decay(train: TrainConfig, step: int) -> float:
    """The EMA decay after optimiser step `step` (0-based); with warm-up, TensorFlow's num_updates rule
    min(decay, (1+n)/(10+n)), so that a run of a few thousand steps does not average in its init."""
    if train.ema_warmup:
        return min(train.ema_decay, (1 + step) / (10 + step))
    return train.ema_decay


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    """Exponential moving average of the weights, once per optimiser step (EMA 0.9999 in the paper)."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters())],
                         1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
