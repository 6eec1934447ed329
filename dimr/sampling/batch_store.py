"""Finished sample batches on disk, so that an evaluation pre-empted or timed out resumes where it stopped.

Image i depends only on its seed and the network (dimr.sampling.generate), so a batch made before a
requeue is the batch the resumed job would make: it is read back instead of sampled again, and the
metrics are those of an uninterrupted run, bit for bit. Batches are keyed by the network file's sha256
(a retrained or replaced network never reuses another's images) inside the evaluation's own folder,
whose name is the hash of the sampling and evaluation config. The store is removed once its metrics
are written: the images were always transient (`sample.npz` keeps them on purpose).
"""

import shutil
from pathlib import Path

import numpy as np

from dimr.io import atomic_write, sha256_file

STORE_DIR = "partial"


class BatchStore:
    """`EVAL_DIR/partial/<network sha256[:16]>/<first seed>-<last seed + 1>.npy`, one per finished batch."""

    def __init__(self, eval_dir, network_file):
        self.folder = Path(eval_dir) / STORE_DIR / sha256_file(network_file)[:16]
        self.loaded = 0  # images read back instead of sampled (reported by the caller)

    def _path(self, first_seed: int, end_seed: int) -> Path:
        return self.folder / f"{first_seed:012d}-{end_seed:012d}.npy"

    def saved(self) -> int:
        """Images already on disk (finished batches of this network)."""
        total = 0
        for p in self.folder.glob("*.npy") if self.folder.is_dir() else ():
            first, end = (int(x) for x in p.stem.split("-"))
            total += end - first
        return total

    def get(self, seeds: np.ndarray) -> np.ndarray | None:
        path = self._path(int(seeds[0]), int(seeds[-1]) + 1)
        if not path.is_file():
            return None
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable (a disk fault): sample the batch again
        if len(images) != len(seeds):
            return None
        self.loaded += len(images)
        return images

    def put(self, seeds: np.ndarray, images: np.ndarray) -> None:
        atomic_write(self._path(int(seeds[0]), int(seeds[-1]) + 1),
                     lambda f: np.save(f, np.ascontiguousarray(images), allow_pickle=False))

    def discard(self) -> None:
        """After the metrics are written. Only this network's store: another process (a snapshot curve)
        may be filling its own beside it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:
            pass  # not empty
