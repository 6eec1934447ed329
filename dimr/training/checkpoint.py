"""Training-state checkpoints: atomic writes, newest found by file name, loud failure on corruption."""

import re
from pathlib import Path

import torch

from dimr.config import config_diff
from dimr.errors import CheckpointError
from dimr.io import atomic_torch_save

CHECKPOINT_DIR = "checkpoints"
FINAL_NETWORK = "network-final.pt"
SNAPSHOT_DIR = "snapshots"
_PATTERN = re.compile(r"^training-state-(\d{12})\.pt$")


def checkpoint_path(run_dir, cur_nimg: int) -> Path:
    # Zero-padded image counter: lexical order is training order (EDM2's naming).
    return Path(run_dir) / CHECKPOINT_DIR / f"training-state-{cur_nimg:012d}.pt"


def snapshot_path(run_dir, cur_nimg: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"network-{cur_nimg:012d}.pt"


def save_snapshot(run_dir, cfg: dict, ema, cur_nimg: int) -> Path:
    """EMA weights at `cur_nimg` for the FID-over-training curve; never deleted (unlike checkpoints)."""
    return atomic_torch_save(snapshot_path(run_dir, cur_nimg), {
        "model_config": cfg["model"], "ema": ema.state_dict(), "cur_nimg": cur_nimg, "name": cfg["name"]})


def list_snapshots(run_dir) -> list[Path]:
    folder = Path(run_dir) / SNAPSHOT_DIR
    return sorted(folder.glob("network-*.pt")) if folder.is_dir() else []


def list_checkpoints(run_dir) -> list[Path]:
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PATTERN.match(p.name))


def save_checkpoint(run_dir, state: dict, keep: int) -> Path:
    """Write the state atomically, then delete all but the newest `keep` checkpoints."""
    path = atomic_torch_save(checkpoint_path(run_dir, state["cur_nimg"]), state)
    for old in list_checkpoints(run_dir)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def load_state(path, config_sha256: str | None = None, what: str = "checkpoint",
               train_config: dict | None = None) -> dict:
    """Load a state dict saved by this module; corrupted files and config mismatches are errors."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupted zip archives
        raise CheckpointError(
            f"{what} {path} is corrupted or truncated ({type(e).__name__}: {e}). Nothing was changed. "
            f"Delete it to resume from the previous checkpoint, or restore it from a backup.") from None
    if not isinstance(state, dict) or "cur_nimg" not in state:
        raise CheckpointError(f"{what} {path} is not a dimr training state; delete or move it.")
    if config_sha256 is not None and state.get("config_sha256") != config_sha256:
        old = state.get("train_config")
        keys = ("; differing keys:\n  " + "\n  ".join(config_diff(old, train_config))
                if isinstance(old, dict) and train_config is not None else "")
        raise CheckpointError(
            f"{what} {path} was written with different training settings "
            f"(sha256 {state.get('config_sha256')} vs {config_sha256}){keys}\n"
            "Train those settings in a new run directory; this one keeps its network.")
    return state


def latest_checkpoint(run_dir, config_sha256: str, train_config: dict | None = None) -> dict | None:
    """The newest training state, or None for a fresh run. Never falls back silently."""
    paths = list_checkpoints(run_dir)
    if not paths:
        return None
    return load_state(paths[-1], config_sha256, train_config=train_config)
