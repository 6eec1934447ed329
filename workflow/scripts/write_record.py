"""Write a run's run.json: the network it is read from, that network's training settings and its
evaluations. The planner (workflow/rules/common.smk, check_records) compares a later study against it."""

from pathlib import Path

from dimr.io import atomic_write_text


def main(snakemake):
    atomic_write_text(snakemake.output[0], snakemake.params.record + "\n")
    Path(snakemake.log[0]).write_text(f"{snakemake.output[0]}\n")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821  (injected by Snakemake's script directive)
