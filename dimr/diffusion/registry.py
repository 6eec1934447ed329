"""Small helpers for `{"type": name, **params}` configs (dataclasses: `dimr.config.dataclass_from_dict`)."""

from dimr.errors import ConfigError


def check_choice(value, choices, what: str):
    """`value` if it is one of `choices`, else a ConfigError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{what} {value!r} unknown; valid choices: {sorted(choices)}")
    return value


def check_like(value, default, where: str):
    """`value` checked against the type of `default` (bool, int, float, str, dict); int -> float is ok."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, (dict, str))  # a string is shorthand for {"type": value}
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def resolve_tagged(what: str, cfg, defaults: dict) -> dict:
    """{"type": name, **params} with every default filled in (k-diffusion style tagged config).

    `defaults` maps each valid name to its parameters' defaults; a bare string is {"type": string}.
    """
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"{what}: expected a mapping with a 'type' key, one of {sorted(defaults)}; "
                          f"got {cfg!r}")
    name = check_choice(cfg["type"], defaults, f"{what} type")
    unknown = sorted(set(cfg) - {"type"} - set(defaults[name]))
    if unknown:
        raise ConfigError(f"{what} {name}: unknown parameter(s) {unknown}; "
                          f"valid parameters: {sorted(defaults[name])}")
    out = {"type": name}
    for k, default in defaults[name].items():
        out[k] = check_like(cfg.get(k, default), default, f"{what} {name}.{k}")
    return out
