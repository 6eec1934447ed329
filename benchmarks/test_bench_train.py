"""Training step per preset: forward, backward, optimiser and EMA step of the loop's own TrainStep."""

import copy
import time

import pytest
import torch

from dimr import perf


class TrainBench:
    """The objects `training_loop` builds (model, EMA, AdamW, objective), driven by its TrainStep."""

    def __init__(self, cfg: dict, device, compiled: bool):
        from dimr.config import TrainConfig
        from dimr.diffusion import DiffusionObjective
        from dimr.models import build_model
        from dimr.training.optim import build_optimizer

        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.model = build_model(cfg["model"]).to(device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = build_optimizer(self.model, TrainConfig(**cfg["train"]))  # fused AdamW on CUDA
        self.objective = DiffusionObjective(cfg["diffusion"])
        self.net = torch.compile(self.model) if compiled else self.model
        self.step_index = 0

    def prepare(self, batch: int):
        """TrainStep for one micro-batch of `batch` images, and a batch as the data loader gives it."""
        from dimr.training.loop import TrainStep

        cfg = {**self.cfg, "train": {**self.cfg["train"], "batch_size": batch}}
        self.train_step = TrainStep(self.net, self.model, self.ema, self.optimizer, self.objective, cfg,
                                    micro=batch)
        m = self.model
        self.x = torch.randn(batch, m.in_channels, m.resolution, m.resolution)
        self.y = torch.randint(0, m.num_classes, (batch,))
        if self.device.type == "cuda":  # the loop's DataLoader pins memory on GPUs
            self.x, self.y = self.x.pin_memory(), self.y.pin_memory()

    def step(self):
        """One optimiser step; synchronises so that the timing covers the GPU work."""
        loss, _ = self.train_step(self.x, self.y, self.step_index)
        self.train_step.finish(self.step_index)
        self.step_index += 1
        perf.synchronize(self.device)
        return loss

    def try_batch(self, batch: int):
        self.prepare(batch)
        self.step()


@pytest.mark.benchmark(group="train")
def test_train_step(benchmark, bench, preset, compiled):
    cfg = bench.run_config(preset)
    tb = TrainBench(cfg, bench.device, compiled)
    t0 = time.perf_counter()
    if compiled and preset in bench.fitted:
        batch = bench.fitted[preset]  # compiled graphs need no more memory than eager ones
        tb.try_batch(batch)
    elif bench.fit_train_batch:
        batch = perf.largest_batch(tb.try_batch, bench.train_batch)
    else:
        batch = bench.train_batch
        tb.try_batch(batch)
    first_step_s = time.perf_counter() - t0  # includes torch.compile's compilation
    bench.fitted.setdefault(preset, batch)

    perf.reset_peak_memory(bench.device)
    seconds, loss = bench.pedantic(benchmark, tb.step)
    assert torch.isfinite(loss).item(), f"{preset}: non-finite training loss"
    if seconds is None:
        return
    images_per_s = batch / seconds
    flops = perf.train_flops_per_image(cfg["model"])
    tflops = perf.achieved_tflops(flops, images_per_s)
    from dimr.models.counting import count_gmacs, count_params

    bench.record(benchmark, kind="train", preset=preset, batch=batch, compiled=compiled,
                 precision=cfg["train"]["precision"], images_per_s=images_per_s, step_s=seconds,
                 tflops=tflops, matmul_peak_tflops=bench.peak_tflops, mfu=tflops / bench.peak_tflops,
                 train_gflops_per_image=flops / 1e9, gmacs=count_gmacs(cfg["model"]),
                 params_m=count_params(tb.model) / 1e6, peak_memory_gib=perf.peak_memory_gib(bench.device),
                 first_step_s=first_step_s)
