"""The memory plan (`dimr plan`): its trace, its arithmetic and the choice `dimr train` makes from it."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dimr.models import resolve_model_config
from dimr.training import memory


def test_attention_is_counted_as_fused_kernels_store_it():
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    q = torch.empty(2, 4, 64, 16, device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), memory._TraceMode(bf16=True):
        out = F.scaled_dot_product_attention(q, q, q)
    assert (2, 4, 64, 64) not in shapes  # no L x L probabilities, as flash attention
    assert (2, 4, 64) in shapes          # its log-sum-exp
    assert out.shape == (2, 4, 64, 16) and out.dtype == torch.bfloat16


def test_bf16_trace_stores_matmul_inputs_in_two_bytes():
    cfg = resolve_model_config("tiny-uvit", {})
    fp32 = memory.trace(cfg, 8, "fp32").activation_bytes([0])[0]
    bf16 = memory.trace(cfg, 8, "bf16").activation_bytes([0])[0]
    assert 0.4 * fp32 < bf16 < 0.9 * fp32  # norms and softmax stay fp32, so not half


@pytest.mark.parametrize("preset", ["tiny-dimr", "tiny-uvit"])
def test_activations_are_linear_in_the_batch_and_the_plan_solves_for_it(preset):
    cfg = resolve_model_config(preset, {})
    p = memory.plan(cfg, 48, gpus=1, gpu_gib=80)
    n_branches = len(memory.block_lists_of(cfg))
    for label, k in memory.CHECKPOINT_CHOICES.items():
        direct = memory.trace(cfg, 48, "bf16").activation_bytes([k] * n_branches)
        assert p.activation_bytes[label] == direct, label
    none, every2, every = (p.activation_bytes[x][1] for x in ("none", "every 2nd block", "every block"))
    assert every < every2 < none
    # 20 bytes per parameter on one GPU: weights, gradients, two AdamW moments, the EMA.
    assert p.state_total == 20 * p.params
    assert memory.plan(cfg, 48, gpus=2, gpu_gib=80).state_total == 24 * p.params  # + DDP's buckets


def test_largest_micro_batch_fits_and_one_more_does_not():
    cfg = resolve_model_config("tiny-dimr", {})
    p = memory.plan(cfg, 1024, gpus=1, gpu_gib=2.0)
    usable = memory.usable_bytes(p.gpu_bytes) - p.state_total
    for label, k in memory.CHECKPOINT_CHOICES.items():
        m = p.max_micro[label]
        every = [k] * len(memory.block_lists_of(cfg))
        assert memory.trace(cfg, m, "bf16").activation_bytes(every)[1] <= usable
        assert memory.trace(cfg, m + 1, "bf16").activation_bytes(every)[1] > usable
    # 1024 per GPU does not fit 2 GiB whole: accumulation over micro-batches that divide 1024
    assert p.choice["checkpoint_blocks"] == 0
    assert p.choice["batch_gpu"] * p.choice["accumulation"] == 1024 and p.choice["accumulation"] > 1


def test_choice_prefers_accumulation_then_checkpointing():
    fits = {"none": 500, "every 2nd block": 600, "every block": 900}
    assert memory.choose(128, fits) == {"checkpoint_blocks": 0, "batch_gpu": 128, "accumulation": 1}
    assert memory.choose(1024, fits) == {"checkpoint_blocks": 0, "batch_gpu": 256, "accumulation": 4}
    small = {"none": 20, "every 2nd block": 40, "every block": 100}
    assert memory.choose(128, small) == {"checkpoint_blocks": 1, "batch_gpu": 64, "accumulation": 2}
    none = {"none": 0, "every 2nd block": 0, "every block": 0}
    assert memory.choose(128, none)["batch_gpu"] == 0


def test_training_choice_on_cpu_and_under_rank_keyed_draws():
    cfg = resolve_model_config("tiny-dimr", {})
    # The CPU has no memory to plan for: the whole batch, no checkpointing; given values are kept.
    assert memory.training_choice(cfg, 64, 1, "fp32", "sample", "auto", "auto", None) == (64, "0", "")
    assert memory.training_choice(cfg, 64, 1, "fp32", "sample", 16, "1", None) == (16, "1", "")
    gpu = int(2.0 * memory.GIB)
    micro, ckpt, note = memory.training_choice(cfg, 1024, 1, "bf16", "sample", "auto", "auto", gpu)
    assert micro < 1024 and 1024 % micro == 0 and ckpt == "0" and "memory plan" in note
    # Rank-keyed draws depend on the split: auto keeps the batch whole and says why.
    micro, _, note = memory.training_choice(cfg, 1024, 1, "bf16", "rank", "auto", "auto", gpu)
    assert micro == 1024 and "train.draws" in note


def test_plan_command_prints_the_official_dimr_xl_2r_setting():
    out = subprocess.run([sys.executable, "-m", "dimr.cli", "plan", "dimr-xl-2r", "--batch", "64",
                          "--gpus", "16"], capture_output=True, text=True, check=True).stdout
    assert "estimate (meta-device trace)" in out
    assert "global batch 1024" in out and "train with: --batch-gpu" in out
    bad = subprocess.run([sys.executable, "-m", "dimr.cli", "plan", "dimr-xl-2r", "--batch", "64",
                          "--measure"], capture_output=True, text=True)
    if not torch.cuda.is_available():
        assert bad.returncode == 2 and "needs a GPU" in bad.stderr
