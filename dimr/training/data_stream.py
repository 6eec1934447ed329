"""The order in which training sees images: a pure function of (seed, image counter)."""

import hashlib

import torch


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part; no two tuples of parts collide."""
    digest = hashlib.sha256("-".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def item_seed(seed: int, position: int) -> int:
    """The seed of the image at `position` in the data stream (step · global batch + its place in the
    batch): what keys its draws under `train.draws: sample`, whichever process and micro-batch takes it."""
    return derived_seed(seed, position, -2)


class StreamBatchSampler(torch.utils.data.Sampler):
    """Infinite stream of per-rank index batches, starting at `start_step`.

    Stream position p is image `perm_e[p mod N]` of epoch e = p // N, where perm_e is a
    permutation seeded by (seed, e). Step s covers positions [s·B, (s+1)·B); rank r takes the
    r-th contiguous slice of B / world. Restarting at any step reproduces the same batches.
    With `keyed`, each element is (index, item_seed(seed, p)) for `SeededItems`.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, rank: int, world: int,
                 start_step: int = 0, keyed: bool = False):
        self.n, self.batch, self.seed = num_items, global_batch, seed
        self.rank, self.world, self.start_step, self.keyed = rank, world, start_step, keyed
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm

    def positions(self, step: int) -> range:
        """Stream positions of this rank's share of `step`."""
        per_rank = self.batch // self.world
        first = step * self.batch + self.rank * per_rank
        return range(first, first + per_rank)

    def indices(self, step: int) -> list:
        out = []
        for p in self.positions(step):
            index = int(self._permutation(p // self.n)[p % self.n])
            out.append((index, item_seed(self.seed, p)) if self.keyed else index)
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self):  # DataLoader asks; the stream is effectively endless
        return 2**62


class SeededItems(torch.utils.data.Dataset):
    """`dataset[index]` with the CPU RNG seeded by the item's stream seed first: its flip (and a latent's
    posterior sample) depends on its place in the stream only, not on the process, the micro-batch or
    the data-loader worker that loads it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        torch.random.default_generator.manual_seed(seed)
        return self.dataset[index]
