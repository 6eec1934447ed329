"""Activation checkpointing of blocks: memory for time, never results.

The official DiMR code wraps every block in `torch.utils.checkpoint` with no switch (libs/core/blocks.py);
here it is chosen per branch: 0 (none), 1 (every block) or k (every k-th block). A marked block keeps no
activations in the forward pass and runs again in the backward pass, with the RNG state of the first run
(`preserve_rng_state`), so dropout draws the same mask. The same CPU ops in the same order give the same
values: losses and gradients are bit-identical with and without it (tests/test_models_checkpointing.py).
Like `--batch-gpu`, it is an option of the training command, not of the run's config: it changes no weight.
"""

import torch
from torch.utils.checkpoint import checkpoint

from dimr.errors import ConfigError


def block_lists(model) -> list:
    """The block lists of a network, lowest resolution first (one per MRN branch; one for a Transformer)."""
    if hasattr(model, "branches"):
        return [b.blocks for b in model.branches]
    return [model.blocks]


def parse_every(text: str, n_branches: int) -> list[int]:
    """'0' | '1' | 'k' (every branch) or 'k0,k1,...' (one per branch, lowest resolution first)."""
    try:
        every = [int(x) for x in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--checkpoint-blocks {text!r}: integers, e.g. 1 (every block), 2 (every 2nd), "
                          "0 (none), or one per branch: 1,0") from None
    if len(every) == 1:
        every = every * n_branches
    if len(every) != n_branches or any(k < 0 for k in every):
        raise ConfigError(f"--checkpoint-blocks {text!r}: one value >= 0, or one per branch "
                          f"({n_branches} in this network)")
    return every


def set_checkpointing(model, every: list[int]) -> int:
    """Mark every k-th block of each branch (k = 0: none); returns the number of marked blocks."""
    marked = 0
    for blocks, k in zip(block_lists(model), every, strict=True):
        for i, blk in enumerate(blocks):
            blk.checkpointed = bool(k) and i % k == k - 1
            marked += blk.checkpointed
    return marked


def call_block(blk, x, c, e):
    """`blk(x, c, e)`, through `torch.utils.checkpoint` when the block is marked and gradients are on."""
    if getattr(blk, "checkpointed", False) and torch.is_grad_enabled():
        return checkpoint(blk, x, c, e, use_reentrant=False, preserve_rng_state=True)
    return blk(x, c, e)
