"""Parameters and GMACs of each variant's network (dimr.models.info.describe on the run's model config)."""

import json

from dimr.io import atomic_write_json
from dimr.models.info import describe


def model_info(config_paths: dict[str, str]) -> dict:
    """{variant: {preset, params, gmacs, breakdown}} from {variant: path of a run's config.json}."""
    out = {}
    for variant, path in config_paths.items():
        cfg = json.loads(open(path).read())
        overrides = {k: v for k, v in cfg["model"].items() if k != "type"}
        info = describe(cfg["preset"], overrides)  # built on the meta device: no memory, any size
        out[variant] = {k: info[k] for k in ("preset", "params", "gmacs", "breakdown")}
    return out


def main(snakemake):
    info = model_info(dict(zip(snakemake.params.variants, snakemake.input)))
    atomic_write_json(snakemake.output[0], info)
    with open(snakemake.log[0], "w") as f:
        for variant, i in info.items():
            print(f"{variant}: {i['params'] / 1e6:.2f}M params, {i['gmacs']:.4g} GMACs", file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
