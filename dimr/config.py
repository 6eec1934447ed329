"""The config layer at the bottom of the package (it imports nothing of dimr but the errors).

It owns: the one dict -> dataclass validator (`dataclass_from_dict`: unknown keys and ill-typed values are
errors naming the key), the one override grammar (`parse_overrides`, `load_yaml`: YAML 1.2 numbers, YAML
lists, duplicate keys refused) used by every command and the study files, the training and sampling
sections and the recipes. `dimr.run_config` composes the sections of all packages into a run config
and names networks and evaluations (`train_identity`, `eval_identity`).
"""

import copy
import dataclasses
import hashlib
import json
import math
import re
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dimr.errors import ConfigError

# ----------------------------------------------------------------------------
# Typed dataclass sections: unknown keys and wrong types are errors (nanoGPT style).


def dataclass_from_dict(cls, d, where: str = ""):
    """Instance of config dataclass `cls` from a mapping (or an instance): unknown keys and ill-typed values
    are errors naming the key (`where.key`) and the valid keys; then the instance's `validate(where)`.
    The one validator of every section (models, diffusion, data, train, sample, evaluate)."""
    if isinstance(d, cls):
        d = dataclasses.asdict(d)
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__} {d!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key(s) {unknown}; valid keys: {fields}")
    hints = typing.get_type_hints(cls)
    obj = cls(**{k: check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items()})
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_type(value, hint, where: str):
    """`value` checked against the annotation `hint`: int -> float is the only coercion; a mapping for a
    dataclass field becomes that dataclass (validated); `where` names the key in the error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{where} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        inner = args[0] if args else typing.Any
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list of {_type_name(inner)}, got {value!r}")
        return [check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint) and isinstance(value, (dict, hint)):
        return dataclass_from_dict(hint, value, where)
    if hint is typing.Any:
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r} ({type(value).__name__})")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and hint is not bool:  # a bool is an int to Python, never to a config
        raise ConfigError(f"{where} must be {_type_name(hint)}, got {value!r} (bool)")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")


@dataclass
class TrainConfig:
    """Optimisation recipe (DiMR §5, the official configs); lengths and intervals in kimg (1,000 images)."""

    batch_size: int = 1024            # global batch over all processes
    total_kimg: float = 307200.0      # 300K iterations at batch 1024 (ImageNet 64 recipe)
    lr: float = 3e-4                  # 3e-4 at 64 px, 2e-4 at 256/512
    weight_decay: float = 0.03        # not applied to TD-LN w and b
    betas: list[float] = field(default_factory=lambda: [0.99, 0.99])
    warmup_kimg: float = 5120.0       # 5K steps at batch 1024, then constant
    lr_decay: typing.Literal["none", "cosine"] = "none"  # after warm-up: constant, or cosine to 0 at the end
    ema_decay: float = 0.9999         # per optimiser step
    ema_warmup: bool = False          # decay min(ema_decay, (1+step)/(10+step)): short runs forget the init
    label_dropout: float = 0.1        # probability of replacing the label by the null class (CFG)
    grad_clip: float = 1.0            # max global grad norm; 0 disables
    precision: typing.Literal["fp32", "bf16"] = "bf16"  # autocast dtype of forward/backward
    checkpoint_kimg: float = 1024.0   # training-state checkpoint interval
    log_kimg: float = 64.0            # JSON-lines log interval
    keep_checkpoints: int = 2         # older training states are deleted
    snapshot_kimg: float = 0.0        # EMA network snapshots, all kept, for FID over training (0: none)
    # What keys the random draws (noise levels, noise, label dropout, flips): "sample", the image's place
    # in the data stream, so 1, 2 or 8 processes and any --batch-gpu train the same run; "rank", the
    # first versions' (seed, step, rank, micro-batch), kept so that their runs resume as they began.
    draws: typing.Literal["rank", "sample"] = "rank"

    def validate(self, where):
        if self.batch_size <= 0 or self.total_kimg <= 0:
            raise ConfigError(f"{where}: batch_size and total_kimg must be positive")
        if not 0 <= self.label_dropout < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{where}: label_dropout and ema_decay must lie in [0, 1)")
        if len(self.betas) != 2:
            raise ConfigError(f"{where}.betas: expected two values, got {self.betas}")


@dataclass
class SampleConfig:
    """What sampling produces; the solver itself is `sampler` (dimr.diffusion.SamplerConfig)."""

    num_samples: int = 50000          # class balanced: label of image i is i mod num_classes
    seed_start: int = 0               # image i uses seed seed_start + i (one seed per image)
    ema: bool = True                  # sample with the EMA weights
    npz: bool = True                  # `dimr eval` also writes ADM-style samples.npz (for ADM's evaluator)
    grid: int = 100                   # images in grid.png (0 disables)
    snapshot_samples: int = 500       # images per training snapshot in the FID-over-training curve
    sampler: dict = field(default_factory=dict)  # dimr.diffusion.SamplerConfig fields
    # A stage-2 network's stage 1 (dimr.run_config.Stage1Config: network, sampler, ema); empty: none
    stage1: dict = field(default_factory=dict)
    relay: dict = field(default_factory=dict)    # dimr.diffusion.RelaySamplerConfig (relay-blur networks)
    # Autocast dtype of this network's evaluations while sampling ("bf16": the network in bfloat16, the
    # solver's arithmetic in float32); a stage 1 samples at its own run's setting.
    precision: str = "fp32"

    def validate(self, where):
        if self.num_samples <= 0:
            raise ConfigError(f"{where}.num_samples must be positive")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{where}.precision {self.precision!r}: choose fp32 or bf16")


# ----------------------------------------------------------------------------
# Recipes: complete defaults for a scale; a spec lists only what differs.

RECIPES = {
    # The embedded default: Fashion-MNIST down-sampled to 16×16 on 2 CPU cores, 1.5-3 minutes of training
    # per run.
    # Chosen by tools/recipe_search.py on run seeds 100+ and sample seeds 1,000,000+ (docs/TINY_RECIPE.md);
    # the studies use run seeds 0-9 and sample seeds 0..N.
    "tiny-fmnist": {
        "data": {"type": "fashion-mnist", "resolution": 16, "hflip": False},
        # v-prediction trained on the plain v-MSE (Salimans & Ho 2022): weight at the noisy end, where
        # the garment's silhouette is decided; ε-space weights give that end almost none.
        "diffusion": {"schedule": {"type": "cosine"}, "prediction": "v",
                      "loss": {"type": "single-scale", "weighting": {"type": "v-mse"}}},
        # Short runs: a high lr (4e-3: U-ViT FID 71 -> 56, MRN with TD-LN 44 -> 29 over 2e-3 on the
        # search seed; 8e-3 is worse again) with betas (0.9, 0.99), no weight decay, and an EMA that warms
        # up so that the average does not hold the initial weights (the paper's 0.9999 needs 300K steps).
        "train": {"batch_size": 64, "total_kimg": 100.0, "lr": 4e-3, "betas": [0.9, 0.99],
                  "weight_decay": 0.0, "warmup_kimg": 1.0, "ema_decay": 0.999, "ema_warmup": True,
                  "precision": "fp32", "checkpoint_kimg": 10.0, "log_kimg": 5.0, "snapshot_kimg": 25.0},
        # train.draws stays "rank", the keying docs/TINY_RECIPE.md measured with: tiny runs train in one
        # process without --batch-gpu, where the rank keying depends on nothing that varies.
        # Classifier-free guidance s = 1.5 (w = 2.5) at 12 DPM-Solver++ steps, chosen on five search-seed
        # networks (docs/TINY_RECIPE.md): mean FID 21.5, against 22.7 at s = 1 and 42.1 unguided; with
        # guidance 12 steps equal 16 (21.5 both), 8 do not (U-ViT 31 vs 22). Every row samples alike; the
        # sampling study shows the unguided points.
        "sample": {"num_samples": 1000, "grid": 100, "snapshot_samples": 500, "npz": False,
                   "sampler": {"sampler": "dpmpp-2m", "steps": 12, "guidance": {"scale": 1.5}}},
        # Equal-size sets for precision/recall (Kynkäänniemi et al. 2019) at this N; the bootstrap over
        # the sample set is the FID's sample-noise floor; clean-fid recomputes the FID as a cross-check.
        "evaluate": {"extractor": "fmnist-net", "prc_reference": "equal", "fid_bootstrap": 100,
                     "clean_fid": True, "clean_fid_num": 1000},
    },
    # ImageNet 64×64 pixels (Table 1 roadmap, DiMR-M/3R): U-ViT / DiMR vp-continuous protocol.
    "paper-imagenet64": {
        "data": {"type": "image-folder", "resolution": 64},
        "diffusion": {"schedule": {"type": "vp-continuous"}, "prediction": "eps"},
        # Draws keyed per image: the run is the same on any number of GPUs and at any --batch-gpu.
        "train": {"lr": 3e-4, "total_kimg": 307200.0, "draws": "sample"},
        "sample": {"num_samples": 50000, "sampler": {"sampler": "dpmpp-2m", "steps": 50}},
        "evaluate": {"extractor": "inception-v3-compat"},
    },
    # ImageNet 256×256 latents (DiMR-XL/2R): SD scaled-linear schedule, 1M iterations.
    "paper-imagenet256": {
        "data": {"type": "latents", "resolution": 256},
        # The network sees the official latent code's linear proxy 8n/1000 − 4 of the integer step n
        # (train.py and eval.py of the official DiMR code), not the schedule's log-SNR.
        "diffusion": {"schedule": {"type": "ddpm-scaled-linear"}, "prediction": "eps",
                      "c_noise": "dimr-latent-proxy"},
        "train": {"lr": 2e-4, "total_kimg": 1024000.0, "draws": "sample"},
        # The official protocol: DPM-Solver, 250 steps, s = 0.4 (w = 1.4), 50K samples (configs/
        # DiMR-XL-2R_imagenet256.py, `config.sample`). `sample.npz: true` also writes the 9.8 GB
        # samples.npz that ADM's evaluator reads (off: a sweep would write one per point).
        "sample": {"num_samples": 50000, "npz": False,
                   "sampler": {"sampler": "dpmpp-2m", "steps": 250, "guidance": {"scale": 0.4}}},
        "evaluate": {"extractor": "inception-v3-compat"},
    },
}

TOP_KEYS = ("name", "seed", "preset", "recipe", "model", "diffusion", "data", "train", "sample",
            "evaluate")
RESULT_SECTIONS = ("seed", "preset", "model", "diffusion", "data", "train", "sample", "evaluate")
# A trained network's identity: everything that changes its weights (and the files training writes:
# checkpoint and snapshot intervals too, since a train job reruns whenever its config changes).
# Sampling and evaluation are children of a network, with identities of their own.
TRAIN_SECTIONS = ("seed", "preset", "recipe", "model", "diffusion", "data", "train")
EVAL_SECTIONS = ("sample", "evaluate")


def deep_merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; `over` wins; mappings are merged, everything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_overrides(items: list[str]) -> dict:
    """`["train.lr=1e-4", "model.depths=[2,2]"]` -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse value ({e})") from None
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def non_finite_keys(node, prefix: str = "") -> list[str]:
    """Dotted keys of the NaN and ±inf floats in a nested config."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in non_finite_keys(v, f"{prefix}{key}.")]
    if isinstance(node, (list, tuple)):
        return [k for i, v in enumerate(node) for k in non_finite_keys(v, f"{prefix}{i}.")]
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{prefix.rstrip('.')}={node}"]
    return []


def results_subset(cfg: dict) -> dict:
    """The part of a run config that changes results (everything but name and provenance)."""
    return {k: cfg[k] for k in RESULT_SECTIONS if k in cfg}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently: a study's duplicated variant would lose a row)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice in one "
                                  "mapping; keep one (YAML would silently drop the first)")
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads 1e-4 as a string; read it as the number everyone means (YAML 1.2 does).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    """YAML (or JSON) text -> Python, rejecting duplicate keys; every YAML the project reads goes here."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:  # not a usable file name (longer than the file system allows): text
        return False


def load_spec(value: str, option: str = "--spec") -> dict:
    """A mapping given as a YAML/JSON file or as the text itself (the workflow passes JSON text)."""
    text = value
    if not value.lstrip().startswith(("{", "[")) and _is_file(value):  # JSON text is never a file name
        try:
            text = Path(value).read_text()
        except OSError as e:
            raise ConfigError(f"{option} {value}: cannot read ({e})") from None
    try:
        spec = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{option} {value[:80]}: neither a readable file nor YAML/JSON ({e})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{option} {value[:80]}: no such file, and not a YAML/JSON mapping")
    return spec


def train_subset(cfg: dict) -> dict:
    """The sections of a run config that define its trained network."""
    return {k: cfg[k] for k in TRAIN_SECTIONS if k in cfg}


def eval_subset(cfg: dict) -> dict:
    """The sections of a run config that define how its network is sampled and scored."""
    return {k: cfg[k] for k in EVAL_SECTIONS if k in cfg}


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        path = f"{prefix}{k}"
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, path + ".")
        elif va != vb:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out


def git_commit() -> str:
    """Commit of the source tree this package runs from ('unknown' outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def sha256_json(obj) -> str:
    """Hash of a JSON-serialisable object, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
