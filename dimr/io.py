"""Atomic file writes and content hashes: nothing half-written is ever left under a final name."""

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write(path, write) -> Path:
    """`write(file)` into a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from a group on a cluster
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


TMP_SUFFIX = ".tmp"


def stale_temp_files(folder) -> list[Path]:
    """Temporary files of writes that were killed (SIGKILL leaves no chance to unlink them)."""
    folder = Path(folder)
    return sorted(folder.glob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync directories
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path, obj) -> Path:
    """torch.save straight into the temporary file: the state is never held twice in memory (a buffer
    would double a checkpoint's size while it is saved); the bytes equal those of a buffer."""
    import torch  # local: table and workflow code import this module without torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_savez(path, **arrays) -> Path:
    import numpy as np  # local: the launcher (submit.py) imports this module and needs no numpy

    return atomic_write(path, lambda f: np.savez(f, **arrays))  # straight into the file, no copy


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()



def npz_errors() -> tuple:
    """What numpy and zipfile raise on a damaged .npz: truncated, empty, not a zip, bad CRC, bad header."""
    return (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError)
