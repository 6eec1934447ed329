"""Study files (ablations/<study>.yaml): schema check, expansion into run specs, resolution by dimr.config.

A study holds a base run spec per scale and variants that list only what they change. The spec of the
run (variant, seed) at a scale is `site[recipe] <- base <- variant.spec <- variant.<scale>` plus its
name and seed; `dimr.run_config.resolve_run_config` turns it into the full run config. A two-stage
variant (a cascade, Ho et al. 2022; Relay Diffusion, Teng et al. 2023) also declares `stage1`, the
training spec of the low-resolution network it samples from: `base <- stage1.spec <- stage1.<scale>`
with the run's seed; the caller names that network and the name goes into `sample.stage1.network`.
Every error names the study file and the key. The library's: `dimr estimate` and the workflow's planning
both read studies here.
"""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from dimr.config import EVAL_SECTIONS, deep_merge
from dimr.config import load_yaml as parse_yaml
from dimr.errors import ConfigError
from dimr.run_config import resolve_run_config
from dimr.sampling.two_stage import low_resolution_of, stage2_kind

SCHEMA_FILE = Path(__file__).resolve().with_name("study.schema.json")  # package data
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of a study at a scale; `dir` is its run directory."""

    study: str
    scale: str
    variant: str
    seed: int

    @property
    def dir(self) -> str:
        return f"{RUNS_DIR}/{self.study}/{self.scale}/{self.variant}/seed{self.seed}"


def load_yaml(path) -> dict:
    """Parse a YAML file, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found")
    try:
        return parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def schema_error_message(path, error: jsonschema.ValidationError) -> str:
    """'FILE: key A.B: problem; valid keys/choices: ...' for one jsonschema error."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        key = ".".join(str(p) for p in [*error.absolute_path, unknown[0]]) if unknown else where
        return f"{path}: key {key!r}: unknown key; valid keys here: {allowed}"
    if error.validator == "propertyNames":
        return (f"{path}: key {where}.{error.instance!r}: variant names may use a-z, 0-9, '_', '.', '-' "
                "(they name run directories)")
    if error.validator == "minProperties" and isinstance(error.instance, dict):
        return (f"{path}: key {where!r}: needs at least {error.validator_value} entries, has "
                f"{len(error.instance)}")
    return f"{path}: key {where!r}: {error.message}"


def validate_study(study: dict, path) -> dict:
    """Check a parsed study against dimr/study.schema.json and the cross-key rules."""
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    best = jsonschema.exceptions.best_match(validator.iter_errors(study))
    if best is not None:
        raise ConfigError(schema_error_message(path, best))
    for scale, body in study["scales"].items():
        key = body.get("select", {}).get("key")
        if key is not None and key not in body.get("sweep", {}):
            raise ConfigError(f"{path}: key 'scales.{scale}.select.key': {key!r} is not swept; swept keys: "
                              f"{sorted(body.get('sweep', {}))}")
    for name, variant in study["variants"].items():
        stage1 = variant.get("stage1", {})
        for where, body in ((f"variants.{name}", variant), (f"variants.{name}.stage1", stage1)):
            for scale in ("tiny", "paper"):
                if scale in body and scale not in study["scales"]:
                    raise ConfigError(f"{path}: key '{where}.{scale}': the study has no scale {scale!r}; "
                                      f"its scales: {sorted(study['scales'])}")
        if "stage1" in variant and any(variant.get(k, {}).get("sample", {}).get("stage1", {}).get("network")
                                       for k in ("spec", "tiny", "paper")):
            raise ConfigError(f"{path}: key 'variants.{name}': sample.stage1.network is set by planning from "
                              f"variants.{name}.stage1; remove it (sample.stage1.sampler stays yours)")
    for name, c in study.get("contrasts", {}).items():
        unknown = sorted(set(c["terms"]) - set(study["variants"]))
        if unknown:
            raise ConfigError(f"{path}: key 'contrasts.{name}.terms': {unknown[0]!r} is not a variant; "
                              f"variants: {list(study['variants'])}")
        total = sum(c["terms"].values())
        if abs(total) > 1e-9:
            raise ConfigError(f"{path}: key 'contrasts.{name}.terms': the weights sum to {total:g}, not 0; a "
                              "contrast compares rows (e.g. {b: 1, a: -1} for b - a), so that what every row "
                              "shares cancels")
    return study


def load_study(path) -> dict:
    """A validated study; its name is the file's stem."""
    study = validate_study(load_yaml(path), path)
    study["name"] = Path(path).stem
    study["path"] = str(path)
    return study


def runs_of(study: dict, scale: str, max_seeds: int | None = None) -> list[Run]:
    """Every run of `study` at `scale`, variants in file order, then seeds."""
    if scale not in study["scales"]:
        raise ConfigError(f"{study['path']}: has no scale {scale!r} (the workflow config's `scale`); "
                          f"its scales: {sorted(study['scales'])}")
    seeds = study["scales"][scale].get("seeds", [0])[:max_seeds]
    return [Run(study["name"], scale, v, s) for v in study["variants"] for s in seeds]


def site_paths(site, spec: dict) -> dict:
    """The site paths under a spec: `site[recipe]`, or `site(spec)` when they depend on more than the
    recipe (the workflow's prepared feature net and statistics are per data resolution)."""
    return site(spec) if callable(site) else site.get(spec["recipe"], {})


def run_spec(study: dict, run: Run, site, stage1_network: str | None = None) -> dict:
    """Site paths of the recipe <- base <- variant.spec <- variant.<scale>, plus the name and seed; a
    two-stage variant's `sample.stage1.network` is `stage1_network` (its stage-1 network's folder name)."""
    variant = study["variants"][run.variant]
    spec = deep_merge(study["scales"][run.scale]["base"], variant.get("spec", {}))
    spec = deep_merge(spec, variant.get(run.scale, {}))
    spec = deep_merge(site_paths(site, spec), spec)
    if stage1_network is not None:
        spec = deep_merge(spec, {"sample": {"stage1": {"network": stage1_network}}})
    spec.update(name=f"{run.study}/{run.variant}/seed{run.seed}", seed=run.seed)
    return spec


def stage1_spec(study: dict, run: Run, site) -> dict | None:
    """The training spec of a two-stage run's stage-1 network (None for a single-stage variant):
    site paths <- the base's training sections <- stage1.spec <- stage1.<scale>, the run's seed."""
    stage1 = study["variants"][run.variant].get("stage1")
    if stage1 is None:
        return None
    base = {k: v for k, v in study["scales"][run.scale]["base"].items() if k not in EVAL_SECTIONS}
    spec = deep_merge(deep_merge(base, stage1.get("spec", {})), stage1.get(run.scale, {}))
    spec = {k: v for k, v in deep_merge(site_paths(site, spec), spec).items() if k not in EVAL_SECTIONS}
    spec.update(name=f"{run.study}/{run.variant}/stage1/seed{run.seed}", seed=run.seed)
    return spec


def _variant_error(study: dict, run: Run, keys: str, e: Exception) -> ConfigError:
    return ConfigError(f"{study['path']}: variant {run.variant!r} at scale {run.scale!r} (keys from {keys}): "
                       f"{e}")


def resolve_run(study: dict, run: Run, site, stage1_network: str | None = None) -> dict:
    """`resolve_run_config` of the run's spec; errors name the study file, the variant and the scale.

    A data set absent on this machine raises MissingFileError (the data's shape fixes the model's input).
    """
    try:
        return resolve_run_config(run_spec(study, run, site, stage1_network))
    except ConfigError as e:
        v = f"variants.{run.variant}"
        raise _variant_error(study, run, f"scales.{run.scale}.base, {v}.spec, {v}.{run.scale}", e) from None


def resolve_stage1(study: dict, run: Run, site) -> dict | None:
    """The resolved config of a two-stage run's stage-1 network (None for a single-stage variant)."""
    spec = stage1_spec(study, run, site)
    if spec is None:
        return None
    try:
        return resolve_run_config(spec)
    except ConfigError as e:
        v = f"variants.{run.variant}.stage1"
        raise _variant_error(study, run, f"scales.{run.scale}.base, {v}.spec, {v}.{run.scale}", e) from None


def check_stages(study: dict, run: Run, cfg: dict, cfg1: dict | None) -> None:
    """A stage-2 network needs a declared stage 1 of its low resolution, data set and classes; a declared
    stage 1 needs a stage-2 network (diffusion.process relay-blur or diffusion.condition low-resolution)."""
    v, kind = f"variants.{run.variant}", stage2_kind(cfg)

    def fail(message):
        raise ConfigError(f"{study['path']}: variant {run.variant!r} at scale {run.scale!r}: {message}")

    if cfg1 is None:
        if kind != "single":
            fail(f"its network is a {kind} stage-2 network, which samples from a {low_resolution_of(cfg)}-px "
                 f"stage-1 network; declare it as `{v}.stage1: {{spec: {{data: {{resolution: "
                 f"{low_resolution_of(cfg)}}}}}}}` (planning trains it and sets sample.stage1.network)")
        if cfg["sample"]["stage1"]:
            fail(f"sample.stage1 is set but the network is single-stage; remove it, or make {v} a stage-2 "
                 "network (diffusion.process relay-blur, or diffusion.condition low-resolution) with a "
                 f"{v}.stage1")
        return
    if kind == "single":
        fail(f"{v}.stage1 is declared but the variant's own network is single-stage (diffusion.process vp, "
             "condition none); give it diffusion.process {type: relay-blur} or diffusion.condition "
             f"{{type: low-resolution}}, or remove {v}.stage1")
    if stage2_kind(cfg1) != "single":
        fail(f"{v}.stage1 is itself a stage-2 network; a stage 1 is single-stage (remove its "
             "diffusion.process and diffusion.condition)")
    low, side1 = low_resolution_of(cfg), cfg1["model"]["resolution"]
    if side1 != low:
        fail(f"{v}.stage1 makes {side1}×{side1} images, but the {cfg['model']['resolution']}-px {kind} "
             f"network starts from {low}×{low} ones: set {v}.stage1 data.resolution to {low}")
    for key in ("in_channels", "num_classes"):
        if cfg1["model"][key] != cfg["model"][key]:
            fail(f"{v}.stage1 has model.{key} {cfg1['model'][key]}, the variant {cfg['model'][key]}: both "
                 "stages must see the same data set")


def variant_table(study: dict) -> list[dict]:
    """Rows of the tables and figures: variant, label, order, paper_fid, paper_params (None if absent)."""
    return [{"variant": name, "label": v.get("label", name), "order": i,
             "paper_fid": v.get("paper_fid"), "paper_params": v.get("paper_params")}
            for i, (name, v) in enumerate(study["variants"].items())]


# ---------------------------------------------------------------------------------------------
# Evaluations: every run is scored by its own sample section ("main", the tables), by each point of the
# study's sweep ("sweep", the sweep figures) and, where a swept value is selected by FID, by each point
# again on sample seeds the reported numbers never use ("select").


def sweep_points(study: dict, scale: str) -> list[dict]:
    """The study's sampling grid at `scale`: [{dotted sample key: value}], the first key slowest."""
    sweep = study["scales"][scale].get("sweep") or {}
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


def evaluations(study: dict, scale: str) -> list[dict]:
    """[{role, point}] of every run of the study: main, then the sweep, then the selection set."""
    out = [{"role": "main", "point": {}}]
    points = sweep_points(study, scale)
    if points and points != [{}]:
        out += [{"role": "sweep", "point": p} for p in points]
        select = study["scales"][scale].get("select")
        if select:
            start = select.get("seed_start", SELECT_SEED_START)
            out += [{"role": "select", "point": {**p, "sample.seed_start": start}} for p in points]
    return out


SELECT_SEED_START = 1_000_000  # the reported sample sets start at sample.seed_start (0): disjoint


def unflatten(point: dict) -> dict:
    """{"sample.sampler.steps": 8} -> {"sample": {"sampler": {"steps": 8}}}."""
    out: dict = {}
    for key, value in point.items():
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return out
