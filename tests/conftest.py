"""Shared pytest fixtures. `slurm_cluster` (a real single-node SLURM cluster): see tests/slurm_cluster.py."""

import pytest
import torch
from slurm_cluster import slurm_cluster  # noqa: F401  (re-exported as a fixture)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP stalls when the 2 cores are shared with other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
