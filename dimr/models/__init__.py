"""Networks of the harness: DiMR's multi-resolution network and single-branch U-ViT, DiT and DiffiT.

Models never import dimr.diffusion: they see (x, c_noise, y) and return per-branch predictions.
"""

import dataclasses

import torch.nn as nn

from dimr.errors import ConfigError
from dimr.models.conditioning import CONDITIONINGS
from dimr.models.config import CONFIG_TYPES, from_dict
from dimr.models.mrn import MRN
from dimr.models.presets import PRESETS
from dimr.models.transformer import Transformer

MODEL_TYPES = {"mrn": MRN, "transformer": Transformer}

__all__ = ["PRESETS", "CONDITIONINGS", "resolve_model_config", "build_model", "config_class"]


def config_class(model_type: str):
    """The dataclass of a model type ('mrn' | 'transformer'); unknown types raise ConfigError."""
    if model_type not in CONFIG_TYPES:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of: {', '.join(CONFIG_TYPES)}")
    return CONFIG_TYPES[model_type]


def resolve_model_config(preset: str, overrides: dict | None = None) -> dict:
    """Preset + flat overrides (typed values) → the full, validated config dict with its `type`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    base = dict(PRESETS[preset])
    model_type = base.pop("type")
    overrides = dict(overrides or {})
    if "type" in overrides and overrides.pop("type") != model_type:
        raise ConfigError(f"preset {preset!r} is a {model_type!r} model; pick a preset of the other type")
    cfg = from_dict(config_class(model_type), {**base, **overrides})
    return {"type": model_type, **dataclasses.asdict(cfg)}


def build_model(cfg: dict) -> nn.Module:
    """Build a network from a config dict with a `type` key (as resolve_model_config returns)."""
    cfg = dict(cfg)
    if "type" not in cfg:
        raise ConfigError(f"model config has no 'type'; set it to one of: {', '.join(CONFIG_TYPES)}")
    model_type = cfg.pop("type")
    return MODEL_TYPES[model_type](from_dict(config_class(model_type), cfg))
