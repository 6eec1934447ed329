"""Write a run's config.json: resolve the run spec (dimr.config) and write it once, atomically."""

from pathlib import Path

from dimr.config import resolve_run_config, write_run_config
from dimr.errors import MissingFileError


def write_config(run_dir, spec: dict, external: list[str]) -> dict:
    """Resolve `spec` and write RUN_DIR/config.json (an existing different one is an error naming keys).

    `external` are site paths no rule builds (data sets, reference batches): checked here, before the run's
    first compute job, so that a wrong path fails in seconds rather than after training.
    """
    for path in external:
        if not Path(path).exists():
            raise MissingFileError(f"{path} does not exist: set the path under `site:` in config/config.yaml "
                                   "(its comments say where each file comes from)")
    return write_run_config(run_dir, resolve_run_config(spec))


def main(snakemake):
    out = Path(snakemake.output[0])
    cfg = write_config(out.parent, snakemake.params.spec, snakemake.params.external)
    with open(snakemake.log[0], "w") as f:
        print(f"{out}: config_sha256 {cfg['provenance']['config_sha256']}", file=f)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
