"""Activation checkpointing changes memory and time, never values: losses and gradients are bit-identical
on the CPU (the recomputed forward runs the same ops in the same order, with the first run's RNG state,
so dropout draws the same mask), and a short training run ends with the same weights."""

import pytest
import torch

from dimr.diffusion import build_objective
from dimr.errors import ConfigError
from dimr.models import build_model, resolve_model_config
from dimr.models.checkpointing import block_lists, parse_every, set_checkpointing
from dimr.run_config import resolve_run_config, write_run_config
from dimr.training.checkpoint import FINAL_NETWORK, load_state
from dimr.training.loop import training_loop


def loss_and_grads(preset, every, dropout=0.1):
    torch.manual_seed(0)
    net = build_model(resolve_model_config(preset, {"dropout": dropout}))
    marked = set_checkpointing(net, every) if every is not None else 0
    cfg = resolve_run_config({"preset": preset, "recipe": "tiny-fmnist"})
    objective = build_objective(cfg["diffusion"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, net.resolution, net.resolution, generator=g)
    y = torch.arange(4)
    torch.manual_seed(2)  # the dropout masks; the generator draws the noise levels and noise
    loss, _ = objective.loss(net, x, y, generator=torch.Generator().manual_seed(3))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}, marked


@pytest.mark.parametrize("preset,every", [("tiny-dimr", [1, 1, 1]), ("tiny-dimr", [2, 0, 1]),
                                          ("tiny-uvit", [1]), ("tiny-dit", [3])])
def test_checkpointed_blocks_give_bit_identical_loss_and_gradients(one_thread, preset, every):
    loss0, grads0, _ = loss_and_grads(preset, None)
    loss1, grads1, marked = loss_and_grads(preset, every)
    assert marked > 0
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys()
    for k in grads0:
        assert torch.equal(grads0[k], grads1[k]), k


def test_every_kth_block_per_branch_is_marked():
    net = build_model(resolve_model_config("tiny-dimr"))
    assert set_checkpointing(net, [2, 0, 1]) == 2 + 0 + 1  # branch depths 5, 1, 1
    assert [[b.checkpointed for b in blocks] for blocks in block_lists(net)] == \
        [[False, True, False, True, False], [False], [True]]
    with pytest.raises(ConfigError, match="one per branch"):
        parse_every("1,1", 3)
    with pytest.raises(ConfigError, match="integers"):
        parse_every("all", 3)


def test_training_with_checkpointing_ends_with_the_same_weights(one_thread, tmp_path):
    train = {"batch_size": 8, "total_kimg": 0.024, "checkpoint_kimg": 0.024, "warmup_kimg": 0.0}
    states = []
    for name, every in (("plain", None), ("checkpointed", "1")):
        cfg = write_run_config(tmp_path / name, resolve_run_config(
            {"preset": "tiny-dimr", "recipe": "tiny-fmnist", "train": train, "model": {"dropout": 0.1}}))
        training_loop(tmp_path / name, cfg, progress=False, checkpoint_blocks=every)
        states.append(load_state(tmp_path / name / FINAL_NETWORK, what="network"))
    for key in ("model", "ema"):
        for k, v in states[0][key].items():
            assert torch.equal(v, states[1][key][k]), (key, k)
