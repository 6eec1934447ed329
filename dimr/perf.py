"""Measuring speed: FLOPs of a training step, a matmul roofline for model FLOP utilisation, device timing,
peak memory, and the machine a number was measured on. Used by benchmarks/ and `dimr estimate`.

FLOP convention (DiT and DiMR report MACs; here FLOPs): `torch.utils.flop_counter.FlopCounterMode`
FLOPs (2 per multiply-add) with attention decomposed by the math SDPA backend, so a count does not
depend on the kernel that runs it and flash attention's recomputation in the backward pass is not
counted (PaLM's "model FLOPs", App. B).
"""

import gc
import os
import platform
import re
import time

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from dimr.config import git_commit
from dimr.models import build_model

# ----------------------------------------------------------------------------
# FLOP counts.


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each gradient (input, weight) of a convolution costs as many multiply-adds as its forward pass.

    Replaces torch's formula, whose weight-gradient term ignores `groups` and so counts a depthwise
    conv's backward pass `groups` times over (30× the forward pass for DiMR's 7×7 ConvNeXt convs).
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: conv_backward_flop}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode with the corrected convolution backward formula."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


def forward_backward_flops(model: nn.Module, *inputs) -> int:
    """FLOPs of `model(*inputs)` plus the backward pass of the sum of its outputs' means."""
    with sdpa_kernel(SDPBackend.MATH), flop_counter() as counter:
        out = model(*inputs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        sum(o.float().mean() for o in outs).backward()  # elementwise loss ops add no counted FLOPs
    return counter.get_total_flops()


def train_flops_per_image(model_cfg: dict) -> float:
    """FLOPs of one training image (forward + backward), counted on the meta device at batch 1.

    The count is linear in the batch. Every head gets a gradient (the multi-scale loss); the noisy
    input needs none, so the first layer skips its input gradient as in training.
    """
    with torch.device("meta"):
        model = build_model(model_cfg)
    C, R = model.in_channels + model.cond_channels, model.resolution  # a cascade: + its conditioning
    x = torch.zeros(1, C, R, R, device="meta")
    c = torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    return float(forward_backward_flops(model, x, c, y))


def achieved_tflops(flops_per_image: float, images_per_s: float) -> float:
    return flops_per_image * images_per_s / 1e12


# ----------------------------------------------------------------------------
# Device timing and memory.


def synchronize(device) -> None:
    """Wait for queued kernels: a GPU timing without this measures only the kernel launches."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float | None:
    """Peak allocated GPU memory since the last reset (None on the CPU: no per-run allocator counter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def largest_batch(try_batch, start: int, minimum: int = 1) -> int:
    """The first of start, start/2, ... for which `try_batch(batch)` runs without running out of memory."""
    batch = start
    while True:
        try:
            try_batch(batch)
            return batch
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err) or batch // 2 < minimum:
                raise
        # Here, outside the handler, the traceback and the activations its frames held are released.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch //= 2


# ----------------------------------------------------------------------------
# Roofline: the speed of a large matmul on this device, the denominator of model FLOP utilisation.


def reference_dtype(device) -> torch.dtype:
    """bf16 on GPUs (what training autocasts to); fp32 on CPUs, where the tiny recipe trains in fp32."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def matmul_tflops(device, dtype: torch.dtype | None = None, n: int | None = None,
                  min_seconds: float = 0.5) -> float:
    """TFLOP/s of an n×n×n matmul (2n³ FLOPs), best of repeated timed batches."""
    device = torch.device(device)
    dtype = dtype or reference_dtype(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    torch.mm(a, b)  # warm-up: cuBLAS heuristics, CPU thread pool
    synchronize(device)
    best, total, reps = 0.0, 0.0, 1
    while total < min_seconds:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        synchronize(device)
        dt = time.perf_counter() - t0
        total += dt
        best = max(best, reps * 2 * n**3 / dt / 1e12)
        reps = min(reps * 2, 64)
    return best


# ----------------------------------------------------------------------------
# Machine information saved with every result.


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device) -> dict:
    """GPU, CUDA, torch and the git commit: what a throughput number depends on."""
    device = torch.device(device)
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,  # of the torch build in use
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "gpu": None,
        "gpu_count": 0,
        "gpu_memory_gib": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_capability=f"{props.major}.{props.minor}", driver=_nvidia_driver())
    return info


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+([\d.]+)", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def machine_name(info: dict) -> str:
    """Short file-name-safe name: the GPU model ('nvidia-h100-80gb-hbm3') or 'cpu-<threads>t'."""
    raw = info["gpu"] if info.get("gpu") else f"cpu-{info.get('threads', 1)}t"
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
