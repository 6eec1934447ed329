"""Finished sample batches on disk, so that an evaluation pre-empted or timed out resumes where it stopped.

Image i depends only on its seed and the network (dimr.sampling.generate), so a batch made before a
requeue is the batch the resumed job would make: it is read back instead of sampled again, and the
metrics are those of an uninterrupted run, bit for bit. Batches are keyed by the network file's sha256
(a retrained or replaced network never reuses another's images) inside the evaluation's own folder,
whose name is the hash of the sampling and evaluation config. The store is removed once its metrics
are written: the images were always transient (`sample.npz` keeps them on purpose).

A `tag` gives a command its own stores beside another's: `dimr eval` (untagged) and the snapshot curve
("curve") of one network run at the same time in one evaluation folder and both sample the final
network, but the curve always samples the EMA weights, so their images of a seed may differ; with separate
folders neither ever reads, or removes, the other's batches. `dimr sample` tags by output, sample section
and rank.
"""

import shutil
from pathlib import Path

import numpy as np

from dimr.io import atomic_write, sha256_file

STORE_DIR = "partial"


class BatchStore:
    """`EVAL_DIR/partial/[<tag>-]<network sha256[:16]>/<first seed>-<last seed + 1>.npy`, one per finished
    batch. A batch of strided seeds (one rank's share) is named the same way: its first and last seed and
    its length (checked on reading) determine it."""

    def __init__(self, eval_dir, network_file, tag: str = ""):
        digest = sha256_file(network_file)[:16]
        self.folder = Path(eval_dir) / STORE_DIR / (f"{tag}-{digest}" if tag else digest)
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
        path = self._path(int(seeds[0]), int(seeds[-1]) + 1)
        try:
            self._write(path, images)
        except FileNotFoundError:
            # Another command's discard removed the shared `partial/` between our mkdir of it and of our
            # own folder (it removes `partial/` only when empty): once more, with both made again.
            self._write(path, images)

    @staticmethod
    def _write(path: Path, images: np.ndarray) -> None:
        atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(images), allow_pickle=False))

    def discard(self) -> None:
        """After the metrics are written. Only this store: another process (a snapshot curve, the
        evaluation) may be filling its own beside it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:
            pass  # not empty
