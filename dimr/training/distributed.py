"""torch.distributed set-up from the environment the launcher exports (RANK, WORLD_SIZE, ...)."""

import os

import torch
import torch.distributed as dist


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Initialise the default process group when WORLD_SIZE > 1; return (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        # NCCL on GPUs, gloo on CPU (tests and the CPU-only default).
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return rank, world_size


def local_device(requested: str | None) -> torch.device:
    """The device this process trains on: LOCAL_RANK's GPU when there is one, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()
