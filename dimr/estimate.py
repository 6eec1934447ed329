"""`dimr estimate`: the GPU-hours each run and each study will cost, from measured throughput.

Training time = training images (total_kimg) / the measured images/s of the run's preset on the
benchmarked machine; sampling time = samples × network evaluations × seconds per image-evaluation;
evaluation time = samples / feature-extraction images/s. A run whose preset was not benchmarked, or
whose model overrides change its size, is costed by its FLOPs at the achieved TFLOP/s measured for
its preset (or, failing that, the mean over the benchmarked presets); the `basis` column says which.
GPU-hours are device-hours: spreading a run over more GPUs shortens the wall time, not the bill.

Each run's training is placed by the memory plan (dimr.training.memory) on the cluster's train jobs
(`Placement`: GPUs per job, GPU memory, time limit, the slurm profile's defaults): the plan's
checkpointing adds its recomputed forward passes to the training time (every block: a step of forward +
backward ≈ 3 forward passes becomes 4), and the wall time over the GPUs gives the time-limit requeues a
run goes through (the launcher requeues without a cap; each resumes from the last checkpoint).
"""

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from dimr import perf, studies
from dimr.config import RECIPES, SampleConfig, TrainConfig, dataclass_from_dict, deep_merge
from dimr.diffusion import SamplerConfig
from dimr.errors import ConfigError, DimrError, MissingFileError
from dimr.models import PRESETS, resolve_model_config
from dimr.models.counting import count_gmacs
from dimr.run_config import resolve_run_config

RESULTS_DIR = Path("results/benchmarks")


def network_evaluations(sampler: str, steps: int) -> int:
    """Network calls of one sampling run: Heun corrects every step but the last (dimr.diffusion.samplers)."""
    return 2 * steps - 1 if sampler == "heun" else steps


# ----------------------------------------------------------------------------
# Benchmark results.


def newest_benchmark(folder=RESULTS_DIR) -> Path:
    files = sorted(Path(folder).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise MissingFileError(f"no benchmark results (*.json) in {folder}; run `make bench` on the machine "
                               "the runs will use, or pass --bench FILE")
    return files[-1]


class Throughput:
    """Per-preset speeds read from one pytest-benchmark JSON written by benchmarks/."""

    def __init__(self, data: dict, source: str = "", compiled: bool = False):
        self.source = source
        info = data.get("machine_info", {}).get("dimr", {})
        self.machine = info.get("machine") or "unknown machine"
        self.unit = "GPU-hours" if info.get("device") == "cuda" else "CPU-hours"
        rows = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
        train = [r for r in rows if r.get("kind") == "train"]
        # The eager rows match `dimr train`'s default; --compiled uses the torch.compile rows.
        chosen = [r for r in train if bool(r.get("compiled")) == compiled] or train
        self.train = {}  # preset -> (images/s, FLOPs per image)
        for r in chosen:
            best = self.train.get(r["preset"])
            if best is None or r["images_per_s"] > best[0]:
                self.train[r["preset"]] = (r["images_per_s"], r["train_gflops_per_image"] * 1e9)
        self.sample = {}  # preset -> (seconds per image-evaluation, forward FLOPs per image)
        for r in rows:
            if r.get("kind") == "sample":
                best = self.sample.get(r["preset"])
                if best is None or r["s_per_image_eval"] < best[0]:
                    self.sample[r["preset"]] = (r["s_per_image_eval"], 2e9 * r["gmacs"])
        self.extract = {}  # extractor -> images/s (its fastest batch)
        for r in rows:
            if r.get("kind") == "extract":
                self.extract[r["extractor"]] = max(self.extract.get(r["extractor"], 0.0), r["images_per_s"])
        if not self.train:
            raise ConfigError(f"{source}: no training benchmarks in this file; run `make bench` (without "
                              "-k filters) to measure them")

    @classmethod
    def load(cls, path, compiled: bool = False) -> "Throughput":
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"benchmark results {path} not found; run `make bench` first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); rerun `make bench`") from None
        return cls(data, str(path), compiled)

    def train_seconds_per_image(self, preset: str, flops: float) -> tuple[float, str]:
        """Seconds of one training image of a model with `flops` per image, and the basis of the figure."""
        if preset in self.train:
            img_s, measured_flops = self.train[preset]
            if abs(flops - measured_flops) <= 1e-3 * measured_flops:
                return 1 / img_s, "measured"
            return flops / (img_s * measured_flops), "preset's TFLOP/s"
        tflops = statistics.median([img_s * f for img_s, f in self.train.values()])
        return flops / tflops, "median TFLOP/s"

    def seconds_per_image_eval(self, preset: str, forward_flops: float) -> tuple[float, str]:
        """Seconds of one network evaluation of one image at sampling time."""
        if preset in self.sample:
            s, measured_flops = self.sample[preset]
            if abs(forward_flops - measured_flops) <= 1e-3 * measured_flops:
                return s, "measured"
            return s * forward_flops / measured_flops, "preset's TFLOP/s"
        if self.sample:
            flops_s = statistics.median([f / s for s, f in self.sample.values()])
        else:  # no sampling benchmark: the training rate (forward ≈ a third of a step) is the best guess
            flops_s = statistics.median([img_s * f for img_s, f in self.train.values()])
        return forward_flops / flops_s, "median TFLOP/s"


# ----------------------------------------------------------------------------
# What a run costs.


@dataclasses.dataclass
class Placement:
    """Where a run trains: config/slurm.yaml's train job (gpus x nodes, runtime) on GPUs of gpu_gib."""

    gpus: int = 8
    gpu_gib: float = 80.0
    time_limit_min: float = 1440.0


# Training time with checkpointing, relative to none: every k-th block runs its forward pass twice.
RECOMPUTE = {0: 1.0, 2: 1.0 + 1 / 6, 1: 1.0 + 1 / 3}


@dataclasses.dataclass
class RunCost:
    """Device-hours of one run: training, sampling, feature extraction."""

    study: str
    variant: str
    seed: int
    preset: str
    kimg: float
    num_samples: int
    nfe: int
    basis: str
    train_h: float
    sample_h: float
    eval_h: float
    gpus: int = 1
    batch_gpu: int = 0          # the memory plan's micro-batch per GPU (0: does not fit)
    checkpoint_blocks: int = 0  # the plan's --checkpoint-blocks (0 none, 1 every block, 2 every 2nd)
    requeues: int = 0           # time-limit requeues of the training job

    @property
    def total_h(self) -> float:
        return self.train_h + self.sample_h + self.eval_h


def run_sections(spec: dict) -> dict:
    """Model, train, sample and evaluate sections of a run spec, resolved by dimr.config.

    A data set that is not on this machine (ImageNet away from the cluster) only fixes the model's
    input shape, which the paper presets already have: resolve without it.
    """
    try:
        return resolve_run_config(spec)
    except DimrError as err:
        recipe = spec.get("recipe", "tiny-fmnist")
        if recipe not in RECIPES or "preset" not in spec:
            raise
        merged = deep_merge(RECIPES[recipe], spec)
        try:
            sample = dataclasses.asdict(dataclass_from_dict(SampleConfig, merged.get("sample", {}), "sample"))
            sample["sampler"] = dataclasses.asdict(SamplerConfig.from_dict(sample["sampler"]))
            train = dataclass_from_dict(TrainConfig, merged.get("train", {}), "train")
            model = resolve_model_config(spec["preset"], merged.get("model", {}))
            return {"preset": spec["preset"], "model": model, "train": dataclasses.asdict(train),
                    "sample": sample, "evaluate": merged.get("evaluate", {})}
        except DimrError:
            raise err from None


class Estimator:
    """Costs runs with a Throughput; FLOP counts are cached per model config (meta device)."""

    def __init__(self, throughput: Throughput, placement: Placement | None = None):
        self.tp, self.place = throughput, placement or Placement()
        self._flops: dict[str, tuple[float, float]] = {}
        self._plans: dict[str, dict] = {}

    def memory_choice(self, model_cfg: dict, batch_per_gpu: int, precision: str) -> dict:
        """The memory plan's {checkpoint_blocks, batch_gpu, accumulation}, cached per model and batch."""
        from dimr.training import memory  # local: it builds networks on the meta device

        key = json.dumps([model_cfg, batch_per_gpu, precision], sort_keys=True)
        if key not in self._plans:
            self._plans[key] = memory.plan(model_cfg, batch_per_gpu, self.place.gpus, self.place.gpu_gib,
                                           precision).choice
        return self._plans[key]

    def flops(self, model_cfg: dict) -> tuple[float, float]:
        """(training FLOPs, forward FLOPs) per image."""
        key = json.dumps(model_cfg, sort_keys=True)
        if key not in self._flops:
            self._flops[key] = (perf.train_flops_per_image(model_cfg), 2e9 * count_gmacs(model_cfg))
        return self._flops[key]

    def cost(self, spec: dict, study: str = "-", variant: str = "-", seed: int = 0) -> RunCost:
        """Cost of a run spec (preset, recipe, overrides), as in a study file."""
        return self.cost_config(run_sections(spec), study, variant, seed)

    def cost_config(self, cfg: dict, study: str = "-", variant: str = "-", seed: int = 0) -> RunCost:
        """Cost of a resolved run config (or the sections `run_sections` returns)."""
        train_flops, fwd_flops = self.flops(cfg["model"])
        preset = cfg["preset"]
        s_train, basis = self.tp.train_seconds_per_image(preset, train_flops)
        sampler = cfg["sample"]["sampler"]
        nfe = network_evaluations(sampler["sampler"], sampler["steps"])
        guided = 2 if sampler["guidance"]["scale"] != 0 else 1  # conditional + unconditional pass
        s_eval, sample_basis = self.tp.seconds_per_image_eval(preset, fwd_flops)
        n = cfg["sample"]["num_samples"]
        extractor = cfg["evaluate"].get("extractor")
        eval_s = n / self.tp.extract[extractor] if extractor in self.tp.extract else 0.0
        if sample_basis != basis:
            basis = f"train {basis}, sample {sample_basis}"
        train = cfg["train"]
        gpus = min(self.place.gpus, train["batch_size"])
        choice = self.memory_choice(cfg["model"], max(1, train["batch_size"] // gpus),
                                    train.get("precision", "bf16"))
        train_h = train["total_kimg"] * 1000 * s_train / 3600 * RECOMPUTE[choice["checkpoint_blocks"]]
        requeues = max(0, math.ceil(train_h / gpus * 60 / self.place.time_limit_min) - 1)
        return RunCost(study, variant, seed, preset, train["total_kimg"], n, nfe, basis, train_h,
                       n * nfe * guided * s_eval / 3600, eval_s / 3600, gpus, choice["batch_gpu"],
                       choice["checkpoint_blocks"], requeues)


# ----------------------------------------------------------------------------
# Studies (dimr/studies.py owns their format) and preset lists.


def study_costs(est: Estimator, path, scale: str, max_seeds: int | None = None) -> list[RunCost]:
    study = studies.load_study(path)
    runs = studies.runs_of(study, scale, max_seeds)
    return [est.cost(studies.run_spec(study, r, {}), study["name"], r.variant, r.seed) for r in runs]


def default_recipe(preset: str) -> str:
    """The recipe matching a preset's input: Fashion-MNIST, ImageNet 64 pixels, else ImageNet 256 latents."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {sorted(PRESETS)}")
    p = PRESETS[preset]
    shape = (p["in_channels"], p["resolution"])
    return {(1, 32): "tiny-fmnist", (3, 64): "paper-imagenet64"}.get(shape, "paper-imagenet256")


def preset_costs(est: Estimator, presets: list[str], kimgs: list[float], recipe: str | None) -> list[RunCost]:
    if kimgs and len(kimgs) not in (1, len(presets)):
        raise ConfigError(f"--kimg: give one value, or one per --preset ({len(presets)}), got {len(kimgs)}")
    out = []
    for i, preset in enumerate(presets):
        spec = {"preset": preset, "recipe": recipe or default_recipe(preset)}
        if kimgs:
            spec["train"] = {"total_kimg": kimgs[i] if len(kimgs) > 1 else kimgs[0]}
        out.append(est.cost(spec, study="presets"))
    return out


def dry_run_table(specs: dict, bench=None, placement: Placement | None = None) -> str:
    """The table for run specs {(study, variant, seed): spec}, as a workflow dry run plans them (a
    resolved config is a spec too).

    Without benchmark results this is a one-line note saying how to get them, never an error.
    """
    try:
        tp = Throughput.load(bench or newest_benchmark())
    except DimrError as err:
        return f"compute estimate unavailable: {err}"
    est = Estimator(tp, placement)
    return format_table([est.cost(spec, *key) for key, spec in specs.items()], tp, est.place)


def summarize(costs: list[RunCost]) -> dict:
    """{study: {runs, train_h, sample_h, eval_h, total_h}} plus 'all'."""
    parts = ("train_h", "sample_h", "eval_h", "total_h")
    out: dict[str, dict] = {}
    for c in costs:
        for key in (c.study, "all"):
            s = out.setdefault(key, {"runs": 0, **dict.fromkeys(parts, 0.0)})
            s["runs"] += 1
            for part in parts:
                s[part] += getattr(c, part)
    return out


def _h(hours: float) -> str:
    """Hours with three decimals below 100 (tiny runs take minutes), whole hours above."""
    return f"{hours:.3f}" if hours < 100 else f"{hours:,.0f}"


def format_table(costs: list[RunCost], tp: Throughput, place: Placement | None = None) -> str:
    place = place or Placement()
    head = f"{'study':<16} {'variant':<20} {'seed':>4} {'preset':<22} {'kimg':>10} {'train h':>10} " \
           f"{'sample h':>9} {'eval h':>7} {'total h':>10} {'micro':>5} {'ckpt':>4} {'requeues':>8}  basis"
    lines = [f"{tp.unit} on {tp.machine} (throughput from {tp.source}); training on {place.gpus} GPUs of "
             f"{place.gpu_gib:g} GiB per job, {place.time_limit_min:g}-minute time limit; micro: the memory "
             "plan's per-GPU micro-batch, ckpt: its --checkpoint-blocks (estimates, `dimr plan`)",
             head, "-" * len(head)]
    for c in costs:
        lines.append(f"{c.study:<16} {c.variant:<20} {c.seed:>4} {c.preset:<22} {c.kimg:>10.1f} "
                     f"{_h(c.train_h):>10} {_h(c.sample_h):>9} {_h(c.eval_h):>7} {_h(c.total_h):>10} "
                     f"{c.batch_gpu:>5} {c.checkpoint_blocks:>4} {c.requeues:>8}  {c.basis}")
    lines.append("-" * len(head))
    for study, s in summarize(costs).items():
        name = "TOTAL" if study == "all" else study
        runs = f"{s['runs']} runs"
        lines.append(f"{name:<16} {runs:<20} {'':>4} {'':<22} {'':>10} {_h(s['train_h']):>10} "
                     f"{_h(s['sample_h']):>9} {_h(s['eval_h']):>7} {_h(s['total_h']):>10}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line.


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("studies", nargs="*", metavar="STUDY", help="study files, e.g. ablations/table1.yaml")
    p.add_argument("--scale", default="paper", choices=["tiny", "paper"],
                   help="scale of the studies (default paper)")
    p.add_argument("--max-seeds", type=int, default=None, help="cost only the first N seeds of each study")
    p.add_argument("--preset", action="append", default=[], help="cost a preset directly (repeatable)")
    p.add_argument("--kimg", type=float, action="append", default=[],
                   help="training length of each --preset in kimg (one for all, or one per preset; "
                        "default: the recipe's total_kimg)")
    p.add_argument("--recipe", default=None,
                   help="recipe of --preset runs (default: the one matching the preset's input)")
    p.add_argument("--bench", default=None, help=f"benchmark JSON (default: the newest in {RESULTS_DIR}/)")
    p.add_argument("--compiled", action="store_true", help="use the torch.compile training benchmarks")
    p.add_argument("--gpus", type=int, default=Placement.gpus, help="GPUs of one training job")
    p.add_argument("--gpu-memory", type=float, default=Placement.gpu_gib, help="GiB per GPU")
    p.add_argument("--time-limit", type=float, default=Placement.time_limit_min,
                   help="training job time limit in minutes (config/slurm.yaml resources.train.runtime)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    if not args.studies and not args.preset:
        raise ConfigError("nothing to estimate: give study files (ablations/*.yaml) "
                          "or --preset NAME [--kimg K]")
    tp = Throughput.load(args.bench or newest_benchmark(), compiled=args.compiled)
    est = Estimator(tp, Placement(args.gpus, args.gpu_memory, args.time_limit))
    costs = []
    for path in args.studies:
        costs += study_costs(est, path, args.scale, args.max_seeds)
    if args.preset:
        costs += preset_costs(est, args.preset, args.kimg, args.recipe)
    if args.json:
        print(json.dumps({"machine": tp.machine, "unit": tp.unit, "benchmark": tp.source,
                          "runs": [{**dataclasses.asdict(c), "total_h": c.total_h} for c in costs],
                          "studies": summarize(costs)}, indent=2))
    else:
        print(format_table(costs, tp, est.place))
    return 0
