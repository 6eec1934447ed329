"""`dimr evaluate RUN_DIR`: metrics of RUN_DIR/samples.npz -> RUN_DIR/metrics.json (values + protocol).

Every input file (samples, extractor weights, reference statistics, clean-fid weights) is checked for
existence and sha256 before anything is computed. Every metric row carries its protocol:
extractor and weights hash, number of samples, seed range, sampler, steps, guidance, reference file
and hash, git commit, library versions.

Metrics: FID, IS (ADM's chunks of 5,000), precision/recall, conditional accuracy (fmnist-net only),
a bootstrap of FID over the generated set (its sample-noise floor) and clean-fid's FID as a cross-check.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from dimr.config import dataclass_from_dict, deep_merge, git_commit, parse_overrides
from dimr.errors import ConfigError, MissingFileError
from dimr.io import atomic_write_json, npz_errors, sha256_file
from dimr.metrics import clean_fid_check, extractors
from dimr.metrics.clean_fid_check import MODES
from dimr.metrics.extractors import EXTRACTORS
from dimr.metrics.fidelity import (
    METRICS,
    Extractor,
    NpzImages,
    Upsampled,
    check_reference,
    conditional_accuracy,
    extract,
    image_batches,
    metrics_from_features,
    reference_pr_features,
)
from dimr.metrics.stats import bootstrap_summary, fid_bootstrap, fid_from_stats, load_stats

SAMPLES_FILE, METRICS_FILE, CONFIG_FILE = "samples.npz", "metrics.json", "config.json"
METRIC_KEYS = ("fid", "is_mean", "is_std", "precision", "recall", "accuracy", "fid_boot_std", "fid_boot_lo",
               "fid_boot_hi", "clean_fid", "clean_fid_rel_diff")
PRC_REFERENCE = ("all", "equal")


@dataclass
class EvaluateConfig:
    """The `evaluate` section of a run config: everything that changes the metric numbers."""

    extractor: str = "fmnist-net"          # fmnist-net (Fashion-MNIST) | inception-v3-compat (ImageNet)
    extractor_weights: str | None = None   # weights file; None: Inception's $TORCH_HOME/hub/checkpoints copy
    extractor_sha256: str | None = None    # expected hash; None: official Inception hash / fidnet.json's
    reference: str | None = None           # statistics .npz: `dimr reference` output or ADM's VIRTUAL_*.npz
    reference_sha256: str | None = None    # expected hash of the reference (None: recorded, not checked)
    metrics: list[str] = field(default_factory=lambda: ["fid", "is", "prc"])  # any of fid, is, prc
    num_samples: int | None = None         # the first N images of samples.npz (None: all)
    num_pr: int | None = None              # generated samples for precision/recall (None: all, as ADM)
    prc_reference: str = "all"             # all: every reference feature (ADM's 10,000 arr_0 / our file's)
                                           # equal: the first as many as generated (Kynkäänniemi et al. 2019)
    prc_neighborhood: int = 3              # k of the k-NN manifolds (Kynkäänniemi et al. 2019)
    is_split_size: int = 5000              # IS over consecutive chunks of this many samples (ADM)
    fid_bootstrap: int = 0                 # resamples of the generated features for FID's noise (0: off)
    fid_bootstrap_seed: int = 0            # seed of the resampling (numpy default_rng)
    clean_fid: bool = False                # also compute clean-fid's FID as a cross-check
    clean_fid_mode: str = "clean"          # clean | legacy_tensorflow (Inception only)
    clean_fid_weights: str | None = None   # clean-fid's inception-2015-12-05.pt (Inception only)
    clean_fid_sha256: str | None = None    # None: the known hash of that file
    clean_fid_num: int = 10000             # images per side in the clean-fid check (PNG round trip)
    clean_fid_rtol: float = 0.01           # clean-fid agrees when |clean - ours| / ours <= this
    # Score the images nearest-upsampled by this factor (each pixel k x k): a lower side's samples in the
    # feature space of a side whose data are its images repeated, so one table holds both (simple
    # diffusion's resolutions on Fashion-MNIST repeated 2x2); the extractor and reference are that side's.
    upsample: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluateConfig":
        """Unknown keys and wrong types are errors listing the valid ones."""
        return d if isinstance(d, cls) else dataclass_from_dict(cls, d, "evaluate")

    def validate(self, where: str = "evaluate") -> None:
        if self.extractor not in EXTRACTORS:
            raise ConfigError(f"{where}.extractor: unknown {self.extractor!r}; valid: {sorted(EXTRACTORS)}")
        bad = sorted(set(self.metrics) - set(METRICS))
        if bad or not self.metrics:
            raise ConfigError(f"{where}.metrics: {self.metrics}; choose from {list(METRICS)}")
        if self.clean_fid_mode not in MODES:
            raise ConfigError(f"{where}.clean_fid_mode: {self.clean_fid_mode!r}; valid: {list(MODES)}")
        if not isinstance(self.upsample, int) or isinstance(self.upsample, bool) or self.upsample < 1:
            raise ConfigError(f"{where}.upsample: a positive integer (1: the images as sampled), "
                              f"got {self.upsample!r}")
        if self.prc_reference not in PRC_REFERENCE:
            raise ConfigError(f"{where}.prc_reference: {self.prc_reference!r}; valid: {list(PRC_REFERENCE)} "
                              "(all reference features, or as many as generated)")
        if self.num_pr is not None and self.num_pr <= self.prc_neighborhood:
            raise ConfigError(f"{where}.num_pr={self.num_pr} must exceed prc_neighborhood="
                              f"{self.prc_neighborhood} (or be null for all generated samples)")
        if self.is_split_size <= 0 or self.clean_fid_num < 2:
            raise ConfigError(f"{where}: need is_split_size >= 1 and clean_fid_num >= 2")
        if self.fid_bootstrap < 0 or self.fid_bootstrap == 1:
            raise ConfigError(f"{where}.fid_bootstrap={self.fid_bootstrap}: 0 (off) or at least 2 resamples")
        if not self.clean_fid_rtol >= 0:
            raise ConfigError(f"{where}.clean_fid_rtol={self.clean_fid_rtol} must be >= 0")
        if self.num_samples is not None and self.num_samples < 2:
            raise ConfigError(f"{where}.num_samples must be at least 2 (or null for all)")


def sampler_protocol(sample: dict) -> dict:
    """Sampler name, steps and guidance from a `sample` section (missing keys -> None)."""
    s = sample.get("sampler", {})
    s = s if isinstance(s, dict) else {"sampler": s}
    return {"sampler": s.get("sampler", s.get("name")), "steps": s.get("steps", sample.get("steps")),
            "guidance": s.get("guidance", sample.get("guidance"))}


def read_samples(path: Path):
    """(NpzImages of arr_0, labels or None, seeds or None, meta dict) of a samples.npz."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z:
                raise ConfigError(f"{path} has no arr_0 (keys {sorted(z.keys())}); "
                                  "rewrite it with `dimr sample`")
            labels = z["labels"] if "labels" in z else None
            seeds = z["seeds"] if "seeds" in z else None
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
        images = NpzImages(path)
    except npz_errors() as e:
        raise ConfigError(f"{path} is damaged or not an .npz ({type(e).__name__}: {e}); nothing was scored: "
                          "delete it and make it again with `dimr sample`") from None
    if images.dtype != np.uint8 or len(images.shape) != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(f"{path}: arr_0 must be uint8 (N, H, W, 1|3), got {images.dtype} {images.shape}")
    return images, labels, seeds, meta


def evaluate_run(run_dir, overrides: dict | None = None, batch_size: int = 64, device=None) -> dict:
    """Compute the configured metrics of RUN_DIR/samples.npz and write RUN_DIR/metrics.json atomically."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise MissingFileError(f"{run_dir / CONFIG_FILE} not found: is {run_dir} a run directory?")
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{run_dir / CONFIG_FILE} is not valid JSON ({e}); restore it or recreate the run "
                          "(`dimr train` / `dimr baseline` write it)") from None
    ev = EvaluateConfig.from_dict(deep_merge(config.get("evaluate", {}), overrides or {}))  # validated

    # Every input file, before computing anything.
    samples_path = run_dir / SAMPLES_FILE
    if not samples_path.is_file():
        raise MissingFileError(f"{samples_path} not found; make it with `dimr sample {run_dir}`")
    samples_sha = sha256_file(samples_path)
    inputs = check_inputs(ev)
    images, labels, seeds, npz_meta = read_samples(samples_path)
    n = len(images) if ev.num_samples is None else ev.num_samples
    if n > len(images):
        raise ConfigError(f"evaluate.num_samples={n} but {samples_path} holds {len(images)} images")
    sample = npz_meta.get("sample") or config.get("sample", {})
    result = score_images(images, labels, seeds, n, ev, inputs, config, sample, batch_size, device)
    result["protocol"]["samples_sha256"] = samples_sha
    atomic_write_json(run_dir / METRICS_FILE, result)
    return result


@dataclass
class Inputs:
    """The files an evaluation reads, loaded and checked (sha256) before any image is made or scored."""

    ev: EvaluateConfig
    ref: object                 # dimr.metrics.stats.Stats
    clean_ref: tuple | None     # (reference images, their description) for the clean-fid check


def check_inputs(ev: EvaluateConfig) -> Inputs:
    """Extractor weights, reference statistics and clean-fid's weights and images: present and intact."""
    extractors.resolve_weights(ev.extractor, ev.extractor_weights, ev.extractor_sha256)
    if ev.reference is None:
        raise ConfigError("evaluate.reference is not set: make statistics with `dimr reference REF.npz ...` "
                          "and pass --set evaluate.reference=REF.npz")
    ref = load_stats(ev.reference, ev.reference_sha256)
    if ev.clean_fid and ev.extractor == "inception-v3-compat":
        clean_fid_check.check_cleanfid_weights(ev.clean_fid_weights, ev.clean_fid_sha256)
    clean_ref = clean_fid_reference(ref, ev.clean_fid_num) if ev.clean_fid else None
    return Inputs(ev, ref, clean_ref)


def score_images(images, labels, seeds, n: int, ev: EvaluateConfig, inputs: Inputs, config: dict,
                 sample: dict, batch_size: int = 64, device=None) -> dict:
    """{metrics, protocol} of the first `n` of `images` (an array, an NpzImages or generated batches)."""
    # local: torch-fidelity loads torchvision (~1.5 s); every command loads this module (run_config)
    import torch_fidelity

    ref, clean_ref = inputs.ref, inputs.clean_ref
    if ev.upsample > 1:
        images = Upsampled(images, ev.upsample)
    extractor = Extractor(ev.extractor, ev.extractor_weights, ev.extractor_sha256, device)
    check_reference(ref, extractor)
    prc, boot = "prc" in ev.metrics, ev.fid_bootstrap if "fid" in ev.metrics else 0
    num_pr = min(n, ev.num_pr or n) if prc else 0
    feats = extract(extractor, images, batch_size, limit=n, keep=n if boot else num_pr)
    ref_pr = None
    if prc:  # "equal": the first as many reference features as generated ones (equal-size sets)
        ref_pr = reference_pr_features(ref, extractor, num_pr if ev.prc_reference == "equal" else None,
                                       batch_size)
    values = metrics_from_features(feats, ref, ev.metrics, ref_pr, ev.prc_neighborhood, ev.is_split_size,
                                   num_pr or None)
    if boot:  # sample-noise floor of FID: the generated set resampled, the reference fixed
        values.update(bootstrap_summary(fid_bootstrap(feats.stats.features(), ref.mu, ref.sigma, boot,
                                                      ev.fid_bootstrap_seed)))
    if ev.extractor == "fmnist-net" and labels is not None:
        # Inception: None, TF-Inception's 1008 logits do not follow ImageNet's class order
        values["accuracy"] = conditional_accuracy(feats.logits, labels[:n])
    metrics = {k: values.get(k) for k in METRIC_KEYS}
    clean = None
    if ev.clean_fid:
        sub = next(image_batches(images, ev.clean_fid_num, limit=min(n, ev.clean_fid_num)))
        metrics["clean_fid"], clean = run_clean_fid(ev, extractor, sub, *clean_ref, batch_size)
        metrics["clean_fid_rel_diff"] = clean["clean_fid_rel_diff"]

    data = config.get("data", {})
    meaningful = extractor.weights.meaningful and not (
        ev.extractor == "inception-v3-compat" and data.get("type") == "fashion-mnist")
    provenance = config.get("provenance", {})
    protocol = {
        **extractor.protocol(), "meaningful": meaningful,
        "num_samples": n, "samples_sha256": None,
        "seed_range": [int(seeds[0]), int(seeds[n - 1])] if seeds is not None else None,
        **sampler_protocol(sample), "seed": config.get("seed"),
        "reference": str(ev.reference), "reference_sha256": ref.sha256, "reference_kind": ref.kind,
        "reference_num": ref.n, "is_splits": values.get("is_splits"),
        "is_split_size": values.get("is_split_size"),
        "prc_neighborhood": ev.prc_neighborhood, "prc_reference": ev.prc_reference if prc else None,
        "prc_num_samples": values.get("prc_num_samples"),
        "prc_num_reference": values.get("prc_num_reference"),
        "prc_num_reference_requested": (num_pr if ev.prc_reference == "equal" else None) if prc else None,
        "fid_bootstrap": boot, "fid_bootstrap_seed": ev.fid_bootstrap_seed if boot else None,
        "clean_fid": clean, "evaluate": dataclasses.asdict(ev),
        "git_commit": git_commit(), "run_git_commit": provenance.get("git_commit"),
        "config_sha256": provenance.get("config_sha256"), "train_sha256": provenance.get("train_sha256"),
        "torch_fidelity_version": torch_fidelity.__version__, "clean_fid_version": _version("clean-fid"),
        "torch_version": torch.__version__, "device": str(extractor.device),
    }
    return {"metrics": metrics, "protocol": protocol}


def run_clean_fid(ev: EvaluateConfig, extractor, samples, ref_images, ref_desc, batch_size) -> tuple:
    """(clean-fid's FID, what it compared, with our FID on the very same images for reference)."""
    ours_net = extractor if ev.extractor == "fmnist-net" else None  # None: clean-fid's own Inception
    value = clean_fid_check.clean_fid(samples, ref_images, ours_net, ev.clean_fid_mode, ev.clean_fid_weights,
                                      ev.clean_fid_sha256, batch_size, extractor.device)
    ours = [extract(extractor, x, batch_size).stats.mu_sigma() for x in (samples, ref_images)]
    fid_ours = fid_from_stats(*ours[0], *ours[1])
    rel = relative_difference(value, fid_ours)
    info = {"mode": ev.clean_fid_mode if ours_net is None else "fmnist-net, no resize",
            "num_samples": len(samples), "num_reference": len(ref_images), "reference_images": ref_desc,
            "fid_ours_same_images": fid_ours, "clean_fid_rel_diff": rel, "rtol": ev.clean_fid_rtol,
            "clean_fid_agrees": rel is not None and rel <= ev.clean_fid_rtol}
    return value, info


def relative_difference(value: float, ours: float) -> float | None:
    """|value - ours| / |ours|; 0 when both are 0, None when only ours is 0."""
    if ours == 0:
        return 0.0 if value == 0 else None
    return abs(value - ours) / abs(ours)


def clean_fid_reference(ref, num: int):
    """Reference images for clean-fid: ADM's arr_0, or the data set our statistics were made from."""
    # local: reference imports fidnet, which imports torch-fidelity (~1.5 s)
    from dimr.metrics.reference import reference_images

    if ref.kind == "adm":
        return next(NpzImages(ref.path).batches(num, limit=num)), {"data": ref.path, "key": "arr_0"}
    src = ref.meta.get("source", {})
    if not src.get("data"):
        raise ConfigError(f"reference {ref.path} records no source images; the clean-fid check needs them")
    images, _ = reference_images(src["data"], src.get("split", "train"), src.get("root"), num,
                                 src.get("resolution", 32), src.get("upsample", 1))
    if not isinstance(images, np.ndarray):
        images = next(images.batches(num, limit=num))
    return images, {**src, "num": len(images)}


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------
# Command line.


def add_arguments(p):
    p.add_argument("run_dir", help=f"a run directory with {CONFIG_FILE} and {SAMPLES_FILE}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="evaluate.KEY=VALUE",
                   help="change the evaluate section for this evaluation (recorded in metrics.json), e.g. "
                        "--set evaluate.reference=work/fmnist-train.npz")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (speed only)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args) -> int:
    over = parse_overrides(args.overrides)
    if set(over) - {"evaluate"}:
        raise ConfigError(f"dimr evaluate --set only changes evaluate.* keys, got {sorted(over)}")
    result = evaluate_run(args.run_dir, over.get("evaluate", {}), args.batch_size, args.device)
    shown = {k: round(v, 4) for k, v in result["metrics"].items() if v is not None}
    print(f"{args.run_dir}: {shown} -> {Path(args.run_dir) / METRICS_FILE}")
    return 0
