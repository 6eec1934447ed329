"""dimr.perf: FLOP counts of forward + backward against hand-counted FLOPs, batch fitting, machine info."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dimr import perf


def test_linear_forward_backward_flops_match_hand_count():
    lin = nn.Linear(64, 32, bias=False)
    fwd = 2 * 8 * 64 * 32
    # Input without grad (the noisy image): backward computes only the weight gradient.
    assert perf.forward_backward_flops(lin, torch.randn(8, 64)) == 2 * fwd
    assert perf.forward_backward_flops(lin, torch.randn(8, 64, requires_grad=True)) == 3 * fwd


def test_depthwise_conv_backward_counts_groups():
    conv = nn.Conv2d(16, 16, 7, padding=3, groups=16, bias=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    fwd = 2 * 2 * 16 * 8 * 8 * 7 * 7  # one 7×7 filter per channel
    assert perf.forward_backward_flops(conv, x) == 3 * fwd
    # torch's own formula counts the weight gradient `groups` times over: the reason for ours.
    with FlopCounterMode(display=False) as counter:
        conv(x).mean().backward()
    assert counter.get_total_flops() > 5 * fwd


def test_dense_conv_backward_agrees_with_torch_formula():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        conv(x).mean().backward()
    assert perf.forward_backward_flops(conv, x) == counter.get_total_flops()


class SelfAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_attention_counted_as_math_backend_bmms():
    n, h, L, d = 2, 3, 16, 8
    q, k, v = (torch.randn(n, h, L, d, requires_grad=True) for _ in range(3))
    fwd = 2 * (2 * n * h * L * L * d)  # QKᵀ and PV
    assert perf.forward_backward_flops(SelfAttention(), q, k, v) == 3 * fwd


def test_train_flops_of_a_preset_are_about_three_forward_passes():
    from dimr.models import resolve_model_config
    from dimr.models.counting import count_gmacs

    cfg = resolve_model_config("tiny-dimr")
    ratio = perf.train_flops_per_image(cfg) / (2e9 * count_gmacs(cfg))
    # 3× less the input gradient of the patch embeddings, which the noisy image does not need.
    assert 2.95 < ratio < 3.0


def test_largest_batch_halves_on_out_of_memory():
    tried = []

    def try_batch(b):
        tried.append(b)
        if b > 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert perf.largest_batch(try_batch, 256) == 32
    assert tried == [256, 128, 64, 32]
    with pytest.raises(torch.OutOfMemoryError):
        perf.largest_batch(try_batch, 256, minimum=64)


def test_largest_batch_reraises_other_errors():
    def broken(b):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        perf.largest_batch(broken, 64)


def test_matmul_roofline_is_a_positive_rate():
    tflops = perf.matmul_tflops("cpu", n=128, min_seconds=0.02)
    assert math.isfinite(tflops) and tflops > 0


def test_machine_info_and_name():
    info = perf.machine_info("cpu")
    assert info["torch"] == torch.__version__ and info["gpu"] is None and info["device"] == "cpu"
    assert info["git_commit"]
    assert perf.machine_name(info) == f"cpu-{torch.get_num_threads()}t"
    assert perf.machine_name({"gpu": "NVIDIA H100 80GB HBM3"}) == "nvidia-h100-80gb-hbm3"
