"""Training-state checkpoints: atomic writes, newest found by file name, loud failure on corruption.

Every state this module writes (checkpoints, snapshots, the final network) carries the sha256 of its
content (every tensor's name, dtype, shape and bytes, and every other value), checked on every load:
a flipped byte inside a tensor, which the zip container does not notice, is refused with the file named.
"""

import hashlib
import json
import re
from pathlib import Path

import torch

from dimr.config import config_diff
from dimr.errors import CheckpointError
from dimr.io import atomic_torch_save
from dimr.run_config import train_identity

CHECKPOINT_DIR = "checkpoints"
FINAL_NETWORK = "network-final.pt"
SNAPSHOT_DIR = "snapshots"
_PATTERN = re.compile(r"^training-state-(\d{12})\.pt$")
CONTENT_KEY = "content_sha256"


def content_digest(state: dict) -> str:
    """sha256 of a state's content in key order, without its own CONTENT_KEY."""
    h = hashlib.sha256()
    _digest(h, {k: v for k, v in state.items() if k != CONTENT_KEY}, "")
    return h.hexdigest()


def _digest(h, node, path: str) -> None:
    if isinstance(node, dict):
        for k in sorted(node, key=str):
            _digest(h, node[k], f"{path}/{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _digest(h, v, f"{path}/{i}")
    elif isinstance(node, torch.Tensor):
        t = node.detach().cpu().contiguous()
        h.update(f"{path}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    else:
        h.update(f"{path}={json.dumps(node, sort_keys=True)}".encode())


def save_state(path, state: dict) -> Path:
    """Write a state atomically with its content hash."""
    return atomic_torch_save(path, {**state, CONTENT_KEY: content_digest(state)})


def network_state(cfg: dict, **tensors) -> dict:
    """The fields of a network file: equal runs give equal bytes (sorted model config, no folder name)."""
    model = json.loads(json.dumps(cfg["model"], sort_keys=True))
    return {"model_config": model, **tensors, "train_sha256": train_identity(cfg)}


def checkpoint_path(run_dir, cur_nimg: int) -> Path:
    # Zero-padded image counter: lexical order is training order (EDM2's naming).
    return Path(run_dir) / CHECKPOINT_DIR / f"training-state-{cur_nimg:012d}.pt"


def snapshot_path(run_dir, cur_nimg: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"network-{cur_nimg:012d}.pt"


def save_snapshot(run_dir, cfg: dict, ema, cur_nimg: int) -> Path:
    """EMA weights at `cur_nimg` for the FID-over-training curve; never deleted (unlike checkpoints)."""
    return save_state(snapshot_path(run_dir, cur_nimg), network_state(cfg, ema=ema.state_dict(),
                                                                     cur_nimg=cur_nimg))


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
    path = save_state(checkpoint_path(run_dir, state["cur_nimg"]), state)
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
    if CONTENT_KEY in state and content_digest(state) != state[CONTENT_KEY]:
        in_run = path.parent.name == CHECKPOINT_DIR
        older = [p for p in list_checkpoints(path.parent.parent) if p < path] if in_run else []
        fix = (f"Move it away to resume from the previous checkpoint, {older[-1]}" if older else
               "Restore it from a backup, or move it away and run the stage that wrote it again")
        raise CheckpointError(
            f"{what} {path} is damaged: its content hash does not match the one written with it (a tensor's "
            f"bytes changed after it was saved). Nothing was changed. {fix}.")
    old = state.get("train_config")
    same_settings = isinstance(old, dict) and train_config is not None and not config_diff(old, train_config)
    if config_sha256 is not None and state.get("config_sha256") != config_sha256 and not same_settings:
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
