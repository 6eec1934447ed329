"""Shared pytest fixtures. `slurm_cluster` (a real single-node SLURM cluster): see tests/slurm_cluster.py."""

from slurm_cluster import slurm_cluster  # noqa: F401  (re-exported as a fixture)
