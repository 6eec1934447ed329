"""Throughput benchmarks (pytest-benchmark) of the project's own code: TrainStep, generate_images, extract.

`make bench` runs them (`pytest benchmarks --benchmark-only --benchmark-enable`) and saves
results/benchmarks/<machine>-<commit>-<time>.json with the machine (GPU, CUDA, torch, commit) and, per
benchmark, `extra_info`: images/s, TFLOP/s, MFU, peak memory, GMACs, preset, batch, device.
workflow/scripts/benchmark_report.py renders them. Normal test runs collect and skip them
(`--benchmark-skip` in pyproject's addopts), so they cannot rot. A CPU runs the tiny presets at small
batches; a GPU runs the paper sizes at the largest batch that fits.
"""

import time
from pathlib import Path

import pytest
import torch

from dimr import perf

GPU_PRESETS = ["dimr-xl-2r", "dimr-g-2r", "dit-xl-2", "uvit-h-2"]
SAMPLERS = ["ddim", "dpmpp-2m", "heun"]
RESULTS_DIR = "results/benchmarks"

# Per device: training batch to start from (a GPU halves one that does not fit), sampling batch and
# guidance (the paper samples ImageNet 256 with s = 0.4; the tiny recipe without), timed rounds (one
# sampling run averages over all its network evaluations), sampling steps, feature extractors and their
# batches (`dimr evaluate` defaults to 64), FID feature widths (fmnist-net 128, Inception pool3 2048).
# A CPU keeps the suite to a few minutes; a GPU to under an hour for the four paper presets.
DEFAULTS = {
    "cuda": dict(train_batch=256, sample_batch=64, guidance=0.4, rounds=5, sample_rounds=1, steps=[25, 50],
                 extractors=["fmnist-net", "inception-v3-compat"], eval_batches=[64, 256],
                 fid_dims=[128, 2048], compile=["off", "on"]),
    "cpu": dict(train_batch=64, sample_batch=16, guidance=0.0, rounds=5, sample_rounds=2, steps=[10],
                extractors=["fmnist-net"], eval_batches=[64], fid_dims=[128], compile=["off"]),
}


def pytest_addoption(parser):
    g = parser.getgroup("dimr benchmarks")
    g.addoption("--bench-device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    g.addoption("--bench-presets", default=None,
                help=f"comma-separated presets (default: tiny-* on a CPU, {','.join(GPU_PRESETS)} on a GPU)")
    g.addoption("--bench-batch", type=int, default=None,
                help="training batch (default: GPU the largest of 256, 128, ... that fits; CPU 64)")
    g.addoption("--bench-steps", default=None,
                help="comma-separated sampling step counts (GPU 25,50; CPU 10)")
    g.addoption("--bench-samplers", default=",".join(SAMPLERS), help="comma-separated samplers")
    g.addoption("--bench-compile", default=None, choices=["off", "on", "both"],
                help="torch.compile the trained model (default: both on a GPU, off on a CPU)")
    g.addoption("--bench-rounds", type=int, default=None,
                help="timed rounds per benchmark (default: training 5; sampling GPU 1, CPU 2)")
    g.addoption("--bench-threads", type=int, default=None,
                help="CPU threads (torch.set_num_threads); 1 is steadier on a machine shared with other jobs")
    g.addoption("--bench-resolution", type=int, default=None,
                help="input side of every preset (default: the preset's own; 16 = the tiny recipe's)")
    g.addoption("--bench-dir", default=RESULTS_DIR, help=f"where the JSON goes (default {RESULTS_DIR})")


def bench_device(config) -> torch.device:
    name = config.getoption("bench_device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def defaults(config) -> dict:
    return DEFAULTS["cuda" if bench_device(config).type == "cuda" else "cpu"]


def _list(text: str | None, default: list, cast=str) -> list:
    return [cast(v.strip()) for v in text.split(",") if v.strip()] if text else list(default)


def bench_presets(config) -> list[str]:
    from dimr.models import PRESETS

    tiny = [p for p in PRESETS if p.startswith("tiny-")]
    default = GPU_PRESETS if bench_device(config).type == "cuda" else tiny
    presets = _list(config.getoption("bench_presets"), default)
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        raise pytest.UsageError(f"--bench-presets: unknown preset(s) {unknown}; valid: {sorted(PRESETS)}")
    return presets


def pytest_generate_tests(metafunc):
    """Parametrise by the options and the device (collected the same way when the benchmarks are skipped)."""
    config, d = metafunc.config, defaults(metafunc.config)
    names = metafunc.fixturenames
    if "preset" in names:
        metafunc.parametrize("preset", bench_presets(config))
    if "sampler" in names:
        metafunc.parametrize("sampler", _list(config.getoption("bench_samplers"), SAMPLERS))
    if "steps" in names:
        metafunc.parametrize("steps", _list(config.getoption("bench_steps"), d["steps"], int))
    if "compiled" in names:
        mode = config.getoption("bench_compile")
        modes = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[mode] if mode else d["compile"]
        metafunc.parametrize("compiled", [m == "on" for m in modes], ids=[f"compile-{m}" for m in modes])
    if "extractor_name" in names:
        metafunc.parametrize("extractor_name", d["extractors"])
    if "eval_batch" in names:
        metafunc.parametrize("eval_batch", d["eval_batches"])
    if "fid_dim" in names:
        metafunc.parametrize("fid_dim", d["fid_dims"])


# ----------------------------------------------------------------------------
# Where results go, and the machine they were measured on.


def benchmarks_will_run(config) -> bool:
    return config.getoption("benchmark_only") or not config.getoption("benchmark_skip")


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads --benchmark-json
def pytest_configure(config):
    if config.getoption("bench_threads"):
        torch.set_num_threads(config.getoption("bench_threads"))
    if benchmarks_will_run(config) and not config.getoption("benchmark_json"):
        from dimr.config import git_commit

        device = bench_device(config)
        name = perf.machine_name(perf.machine_info(device))
        commit = git_commit()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")
        path = Path(config.rootpath) / config.getoption("bench_dir") / f"{name}-{tag}-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = path


class BenchSession:
    """Device, options and the matmul roofline (measured once, lazily) shared by every benchmark."""

    def __init__(self, config):
        self.config = config
        self.device = bench_device(config)
        self.cuda = self.device.type == "cuda"
        self.gpu = torch.cuda.get_device_name(self.device) if self.cuda else None
        d = defaults(config)
        self.rounds = config.getoption("bench_rounds") or d["rounds"]
        self.train_batch = config.getoption("bench_batch") or d["train_batch"]
        self.resolution = config.getoption("bench_resolution")
        self.fit_train_batch = self.cuda and not config.getoption("bench_batch")
        self.sample_batch, self.guidance = d["sample_batch"], d["guidance"]
        self.sample_rounds = config.getoption("bench_rounds") or d["sample_rounds"]
        self.fitted: dict[str, int] = {}  # preset -> training batch that fits (eager run first)
        self._peak = None

    @property
    def peak_tflops(self) -> float:
        """TFLOP/s of a large matmul in the training dtype, measured once in this run (MFU's denominator)."""
        if self._peak is None:
            self._peak = perf.matmul_tflops(self.device)
        return self._peak

    def run_config(self, preset: str, **sections) -> dict:
        """The run config of `preset`: tiny-fmnist recipe, the preset's own input shape; bf16 on a GPU.

        Throughput does not depend on the data or the schedule, so paper presets need no ImageNet files.
        """
        from dimr.config import RECIPES, deep_merge
        from dimr.models import PRESETS
        from dimr.run_config import resolve_run_config

        p = PRESETS[preset]
        # Fashion-MNIST presets run at the tiny recipe's data resolution (what `dimr estimate` costs).
        fmnist = (p["in_channels"], p["num_classes"]) == (1, 10)
        recipe_side = RECIPES["tiny-fmnist"]["data"]["resolution"]
        side = self.resolution or (recipe_side if fmnist else p["resolution"])
        spec = {"preset": preset, "recipe": "tiny-fmnist",
                "model": {"in_channels": p["in_channels"], "resolution": side,
                          "num_classes": p["num_classes"]},
                "train": {"precision": "bf16" if self.cuda else "fp32"}}
        return resolve_run_config(deep_merge(spec, sections))

    def pedantic(self, benchmark, fn, rounds=None, warmup_rounds=1):
        """Time `fn` (which synchronises the device itself): (seconds or None if disabled, its result).

        The seconds are the fastest round's: slower rounds measure other processes on a shared machine
        (on a dedicated GPU the rounds agree to ~1%); every round stays in the JSON.
        """
        rounds = rounds or self.rounds
        result = benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        return (benchmark.stats.stats.min if benchmark.stats is not None else None), result

    def record(self, benchmark, **info):
        """Save `info` (and the device) as the benchmark's extra_info, floats to 6 significant digits."""
        base = {"device": self.device.type, "gpu": self.gpu, "threads": torch.get_num_threads(),
                "resolution_override": self.resolution}
        info = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in info.items()}
        benchmark.extra_info.update({**base, **info})


BENCH = pytest.StashKey[BenchSession]()


@pytest.fixture(scope="session")
def bench(pytestconfig) -> BenchSession:
    session = pytestconfig.stash[BENCH] = BenchSession(pytestconfig)
    return session


def pytest_benchmark_update_machine_info(config, machine_info):
    """GPU, CUDA, torch, commit and the matmul roofline of this run, saved with every result file."""
    device = bench_device(config)
    machine_info["dimr"] = perf.machine_info(device)
    machine_info["dimr"]["machine"] = perf.machine_name(machine_info["dimr"])
    session = config.stash.get(BENCH, None)
    if session is not None and session._peak is not None:
        machine_info["dimr"]["matmul_peak_tflops"] = round(session._peak, 4)
        machine_info["dimr"]["matmul_dtype"] = str(perf.reference_dtype(device)).removeprefix("torch.")
