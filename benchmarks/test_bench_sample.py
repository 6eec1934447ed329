"""Sampling per preset, sampler and step count, through `generate_images` (what `dimr sample` runs)."""

import pytest
import torch

from dimr import perf

_NETS: dict = {}  # one network at a time, reused across samplers and step counts


def sampling_net(preset: str, cfg: dict, device):
    """The preset's network in eval mode (random weights: speed does not depend on them)."""
    from dimr.models import build_model

    if preset not in _NETS:
        _NETS.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        _NETS[preset] = build_model(cfg["model"]).to(device).eval().requires_grad_(False)
    return _NETS[preset]


@pytest.mark.benchmark(group="sample")
def test_sample(benchmark, bench, preset, sampler, steps):
    from dimr.models.counting import count_gmacs
    from dimr.sampling import generate_images

    sampler_cfg = {"sampler": sampler, "steps": steps, "guidance": {"scale": bench.guidance}}
    cfg = bench.run_config(preset, sample={"sampler": sampler_cfg})
    net = sampling_net(preset, cfg, bench.device)
    calls = []
    hook = net.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))

    def run(batch):
        images = generate_images(net, cfg, torch.arange(batch), device=bench.device)
        perf.synchronize(bench.device)
        return images

    try:
        if bench.cuda:
            batch = perf.largest_batch(run, bench.sample_batch)
        else:
            batch = bench.sample_batch
            with torch.no_grad():  # first-call overheads (kernel selection) outside the timing
                x = torch.zeros(batch, net.in_channels, net.resolution, net.resolution)
                net(x, torch.zeros(batch), torch.zeros(batch, dtype=torch.long))
        calls.clear()
        perf.reset_peak_memory(bench.device)
        warmup = 1 if bench.cuda else 0
        seconds, images = bench.pedantic(benchmark, lambda: run(batch), rounds=bench.sample_rounds,
                                         warmup_rounds=warmup)
    finally:
        hook.remove()
    assert images.shape == (batch, net.resolution, net.resolution, net.in_channels)
    if seconds is None:
        return
    nfe = len(calls) // (bench.sample_rounds + warmup)  # network evaluations per sampling run
    forward_batch = calls[0]  # 2·batch with classifier-free guidance
    bench.record(benchmark, kind="sample", preset=preset, sampler=sampler, steps=steps, batch=batch,
                 guidance=bench.guidance, nfe=nfe, forward_batch=forward_batch, images_per_s=batch / seconds,
                 sample_s=seconds, s_per_nfe=seconds / nfe, s_per_image_eval=seconds / (nfe * forward_batch),
                 gmacs=count_gmacs(cfg["model"]), peak_memory_gib=perf.peak_memory_gib(bench.device))
