"""A run's config as files and as a whole: the merge order of every section, written once, read by all.

`dimr.config` owns the sections and the grammar (it imports nothing of dimr but the errors); this module
composes them with the packages that own the other sections (models, diffusion, data, metrics).
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from dimr.config import (
    EVAL_SECTIONS,
    RECIPES,
    RESULT_SECTIONS,
    TOP_KEYS,
    TRAIN_SECTIONS,
    SampleConfig,
    TrainConfig,
    config_diff,
    dataclass_from_dict,
    deep_merge,
    git_commit,
    non_finite_keys,
    results_subset,
    sha256_json,
    train_subset,
)
from dimr.data import DataConfig, dataset_shape
from dimr.diffusion import DiffusionConfig, RelaySamplerConfig, SamplerConfig
from dimr.errors import ConfigError
from dimr.io import atomic_write_json
from dimr.metrics.evaluate import EvaluateConfig
from dimr.models import config_class, resolve_model_config

CONFIG_FILE = "config.json"
# The dataclass of each section whose fields an identity leaves out at their defaults (the model's by type).
SECTION_CLASSES = {"diffusion": DiffusionConfig, "data": DataConfig, "train": TrainConfig,
                   "sample": SampleConfig, "evaluate": EvaluateConfig}


@dataclass
class Stage1Config:
    """`sample.stage1` of a stage-2 network: the network whose samples it starts from (Relay Diffusion §3)
    or is conditioned on (Ho et al. 2022, §3). Image i of both stages comes from seed i."""

    network: str = ""             # the stage-1 network's folder: a name next to the stage-2 one, or a path
    sampler: dict = field(default_factory=dict)  # its SamplerConfig, over the sample section's `sampler`
    ema: bool = True              # sample stage 1 with its EMA weights

    def validate(self, where):
        if not self.network:
            raise ConfigError(f"{where}.network: name the stage-1 network's folder (a trained network "
                              "next to this one, e.g. runs/networks/<name>, or an absolute path)")


def field_defaults(cls) -> dict:
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def without_defaults(cfg: dict, sections) -> dict:
    """`sections` of a resolved config, each without the fields that equal their dataclass default.

    So a later version that adds a field whose default is the old behaviour (as every new field must)
    names the same networks and evaluations: an upgrade never asks to retrain. A changed default is a
    code change, recorded with the commit in every file's provenance.
    """
    out = {}
    for name in sections:
        if name not in cfg:
            continue
        value = cfg[name]
        cls = config_class(value["type"]) if name == "model" else SECTION_CLASSES.get(name)
        if cls is not None and isinstance(value, dict):
            defaults = field_defaults(cls)
            value = {k: v for k, v in value.items() if k not in defaults or v != defaults[k]}
        out[name] = value
    return out


def with_defaults(free: dict, sections) -> dict:
    """The inverse of `without_defaults`: every left-out field back at its dataclass default."""
    out = dict(free)
    for name in sections:
        value = free.get(name)
        model = name == "model" and isinstance(value, dict)
        cls = config_class(value["type"]) if model else SECTION_CLASSES.get(name)
        if cls is not None and isinstance(value, dict):
            out[name] = {**field_defaults(cls), **value}
    return out


def train_identity(cfg: dict) -> str:
    """sha256 of the training sections (at non-default values): equal for runs that train the same
    weights, in any study and across versions that only add fields."""
    return sha256_json(without_defaults(cfg, TRAIN_SECTIONS))


def eval_identity(cfg: dict) -> str:
    """sha256 of the sample and evaluate sections (at non-default values): one evaluation of a network."""
    return sha256_json(without_defaults(cfg, EVAL_SECTIONS))


def resolve_run_config(spec: dict) -> dict:
    """Spec -> the full, validated run config. The whole merge order, lowest first:

    1. the recipe, `RECIPES[spec["recipe"]]` (complete defaults of a scale);
    2. the spec's sections over it; a study's spec is itself, lowest first, the site paths of its recipe
       (config/config.yaml `site`), the study's `scales.<scale>.base`, the variant's `spec`, the
       variant's `<scale>` (`dimr.studies.run_spec`); on the command line, `--spec` then `--set`;
    3. the model: the preset's config, then the fields the data set fixes (channels, resolution, classes),
       then the merged `model` section;
    4. every section validated by its owner (dataclass defaults fill what is left), then no number may
       be non-finite.
    """

    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"run spec: unknown key(s) {unknown}; valid keys: {list(TOP_KEYS)}")
    if "preset" not in spec:
        raise ConfigError("run spec: 'preset' is required (see `dimr info --list`)")
    recipe_name = spec.get("recipe", "tiny-fmnist")
    if recipe_name not in RECIPES:
        raise ConfigError(f"run spec: unknown recipe {recipe_name!r}; valid recipes: {sorted(RECIPES)}")
    merged = deep_merge(RECIPES[recipe_name], {k: v for k, v in spec.items() if k in RESULT_SECTIONS})

    data = dataclasses.asdict(dataclass_from_dict_or_self(DataConfig, merged.get("data", {}), "data"))
    channels, resolution, num_classes = dataset_shape(data)
    diffusion = dataclasses.asdict(dataclass_from_dict_or_self(DiffusionConfig, merged.get("diffusion", {}),
                                                               "diffusion"))
    # The data set fixes the network's input; latent data sets change channels and resolution.
    model_over = {"in_channels": channels, "resolution": resolution, "num_classes": num_classes}
    condition = diffusion["condition"]
    if condition["type"] == "low-resolution":  # a cascade also sees the upsampled low-resolution image
        low = condition["resolution"]
        if resolution % low or low >= resolution:
            raise ConfigError(f"diffusion.condition.resolution {low} must divide data.resolution "
                              f"{resolution} and be smaller (the stage-1 side, e.g. 16 for 32)")
        model_over["cond_channels"] = channels
    model_over.update(merged.get("model", {}))
    model = resolve_model_config(spec["preset"], model_over)

    sample = dataclass_from_dict(SampleConfig, merged.get("sample", {}), "sample")
    sample.sampler = dataclasses.asdict(dataclass_from_dict_or_self(SamplerConfig, sample.sampler,
                                                                    "sample.sampler"))
    if sample.stage1:  # empty: a single-stage evaluation (identities unchanged)
        stage1 = dataclass_from_dict(Stage1Config, sample.stage1, "sample.stage1")
        stage1.sampler = dataclasses.asdict(dataclass_from_dict_or_self(
            SamplerConfig, deep_merge(sample.sampler, stage1.sampler), "sample.stage1.sampler"))
        sample.stage1 = dataclasses.asdict(stage1)
    if diffusion["process"]["type"] == "relay-blur":
        sample.relay = dataclasses.asdict(dataclass_from_dict_or_self(RelaySamplerConfig, sample.relay,
                                                                      "sample.relay"))
    elif sample.relay:
        raise ConfigError("sample.relay: the relay sampler samples relay-blur networks only; this network "
                          f"has diffusion.process {diffusion['process']['type']!r} (remove sample.relay)")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    cfg = {
        "name": str(spec.get("name", spec["preset"])),
        "seed": seed,
        "preset": spec["preset"],
        "recipe": recipe_name,
        "model": model,
        "diffusion": diffusion,
        "data": data,
        "train": dataclasses.asdict(dataclass_from_dict(TrainConfig, merged.get("train", {}), "train")),
        "sample": dataclasses.asdict(sample),
        "evaluate": dataclasses.asdict(dataclass_from_dict_or_self(
            EvaluateConfig, merged.get("evaluate", {}), "evaluate")),
    }
    bad = non_finite_keys(cfg)
    if bad:  # no setting of any section means anything at NaN or ±inf (json would write them as NaN)
        raise ConfigError(f"non-finite value(s) at {bad}: every number of a run config must be finite")
    return cfg


def resolve_eval_config(net_cfg: dict, over: dict) -> dict:
    """{sample, evaluate}: the network config's own (or its recipe's) with `over` merged, validated."""
    bad = sorted(set(over) - set(EVAL_SECTIONS))
    if bad:
        raise ConfigError(f"an evaluation changes only {list(EVAL_SECTIONS)}, got {bad}: other sections "
                          "change the trained network (train a new one)")
    spec = {k: net_cfg[k] for k in TRAIN_SECTIONS if k not in ("model",)}
    spec["model"] = {}  # the preset's model: only the sample and evaluate sections are taken from the result
    for k in EVAL_SECTIONS:
        spec[k] = deep_merge(net_cfg.get(k, {}), over.get(k, {}))
    full = resolve_run_config(spec)
    return {k: full[k] for k in EVAL_SECTIONS}


def dataclass_from_dict_or_self(cls, d, where):
    """Use the owning package's `from_dict` when it has one (it knows nested registries)."""
    if hasattr(cls, "from_dict"):
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            msg = str(e)  # owners' messages may already name their section
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    return dataclass_from_dict(cls, d, where)


def write_run_config(run_dir, cfg: dict) -> dict:
    """Write config.json once. An existing config must agree on every training key (its trained network).

    The sample and evaluate sections of an existing config stay as first written: they are the folder's
    default evaluation, and any other is a child evaluation (`dimr eval RUN_DIR --set sample.…`).
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if path.exists():
        existing = load_run_config(run_dir)
        diff = config_diff(train_subset(existing), train_subset(cfg))
        if diff:
            raise ConfigError(
                f"{path} already exists with different training settings; differing keys:\n  "
                + "\n  ".join(diff) + "\nTrain them in a new run directory; this one keeps its network "
                "(sampling and evaluation settings go to `dimr eval`, which never changes it).")
        return existing
    cfg = dict(cfg)
    cfg["provenance"] = {"git_commit": git_commit(), "config_sha256": sha256_json(results_subset(cfg)),
                         "train_sha256": train_identity(cfg)}
    atomic_write_json(path, cfg)
    return cfg


def load_run_config(run_dir) -> dict:
    """Read `run_dir/config.json`, with a clear error when it is missing or malformed."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{path} not found: create the run first, e.g. "
                          f"`dimr train {run_dir} --preset tiny-dimr`")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); restore it or recreate the run") from None
    missing = [k for k in TRAIN_SECTIONS if k not in cfg]  # a network folder has no sample/evaluate
    if missing:
        raise ConfigError(f"{path}: missing section(s) {missing}; it was not written by `dimr`")
    return cfg
