"""`dimr info PRESET [--set KEY=VALUE ...] [--json]`: parameters, GMACs and a per-component breakdown."""

import argparse
import json

import torch

from dimr import config
from dimr.errors import ConfigError
from dimr.models import PRESETS, build_model, resolve_model_config
from dimr.models.counting import count_gmacs, count_params, param_breakdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `info` arguments to a (sub)parser."""
    parser.add_argument("preset", help=f"model preset, one of: {', '.join(PRESETS)}")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field (YAML values), e.g. --set depths=[15,8,8]",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def parse_overrides(preset: str, items: list[str]) -> dict:
    """`KEY=VALUE` (or `model.KEY=VALUE`) strings -> model overrides, in the one grammar of every command
    and study file (`dimr.config.parse_overrides`: YAML values, lists as [3, 2, 2])."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    over = config.parse_overrides(items)
    model = over.pop("model", {})
    return {**over, **model}


def describe(preset: str, overrides: dict | None = None) -> dict:
    """Counts of a preset: {preset, type, params, gmacs, breakdown, config}."""
    cfg = resolve_model_config(preset, overrides)
    with torch.device("meta"):  # no memory, even for the 1B preset
        model = build_model(cfg)
    return {
        "preset": preset,
        "type": cfg["type"],
        "params": count_params(model),
        "gmacs": count_gmacs(cfg),
        "breakdown": param_breakdown(model),
        "config": cfg,
    }


def run(args) -> int:
    """Print the description of `args.preset` (a table, or one JSON object with --json)."""
    info = describe(args.preset, parse_overrides(args.preset, args.overrides))
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    rows = [
        ("preset", f"{info['preset']} ({info['type']})"),
        ("params", f"{info['params'] / 1e6:.2f}M ({info['params']:,})"),
        ("GMACs", f"{info['gmacs']:.4g} (one forward pass, batch 1)"),
    ]
    rows += [
        (f"  {name}", f"{n / 1e6:9.3f}M  {100 * n / info['params']:5.1f}%")
        for name, n in info["breakdown"].items()
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
