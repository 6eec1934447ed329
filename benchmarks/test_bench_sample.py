"""Sampling per preset, sampler and step count, through `generate_images` (what `dimr sample` runs)."""

import pytest
import torch

from dimr import perf


@pytest.fixture(scope="module")
def nets(bench):
    """One network at a time, reused across samplers and step counts; freed before the training benchmarks."""
    cache: dict = {}
    yield cache
    cache.clear()
    if bench.cuda:
        torch.cuda.empty_cache()


def sampling_net(nets: dict, preset: str, cfg: dict, device):
    """The preset's network in eval mode (random weights: speed does not depend on them)."""
    from dimr.models import build_model

    if preset not in nets:
        nets.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        nets[preset] = build_model(cfg["model"]).to(device).eval().requires_grad_(False)
    return nets[preset]


@pytest.mark.benchmark(group="sample")
def test_sample(benchmark, bench, nets, preset, sampler, steps):
    from dimr.models.counting import count_gmacs
    from dimr.sampling import generate_images

    sampler_cfg = {"sampler": sampler, "steps": steps, "guidance": {"scale": bench.guidance}}
    cfg = bench.run_config(preset, sample={"sampler": sampler_cfg})
    net = sampling_net(nets, preset, cfg, bench.device)
    per_image = 2 if bench.guidance else 1  # guidance evaluates the conditional and unconditional halves

    @torch.no_grad()
    def one_evaluation(batch):
        """One network call at sampling's batch: the warm-up, and the memory check on a GPU."""
        n = batch * per_image
        x = torch.zeros(n, net.in_channels, net.resolution, net.resolution, device=bench.device)
        net(x, torch.zeros(n, device=bench.device), torch.zeros(n, dtype=torch.long, device=bench.device))
        perf.synchronize(bench.device)

    batch = perf.largest_batch(one_evaluation, bench.sample_batch)
    calls = []
    hook = net.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))

    def run():
        images = generate_images(net, cfg, torch.arange(batch), device=bench.device)
        perf.synchronize(bench.device)
        return images

    perf.reset_peak_memory(bench.device)
    try:
        seconds, images = bench.pedantic(benchmark, run, rounds=bench.sample_rounds, warmup_rounds=0)
    finally:
        hook.remove()
    assert images.shape == (batch, net.resolution, net.resolution, net.in_channels)
    assert calls and calls[0] == batch * per_image
    if seconds is None:
        return
    nfe = len(calls) // bench.sample_rounds  # network evaluations per sampling run
    bench.record(benchmark, kind="sample", preset=preset, sampler=sampler, steps=steps, batch=batch,
                 guidance=bench.guidance, nfe=nfe, forward_batch=calls[0], images_per_s=batch / seconds,
                 sample_s=seconds, s_per_nfe=seconds / nfe, s_per_image_eval=seconds / (nfe * calls[0]),
                 gmacs=count_gmacs(cfg["model"]), peak_memory_gib=perf.peak_memory_gib(bench.device))
