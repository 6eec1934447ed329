"""The order in which training sees images: a pure function of (seed, image counter)."""

import torch


class StreamBatchSampler(torch.utils.data.Sampler):
    """Infinite stream of per-rank index batches, starting at `start_step`.

    Stream position p is image `perm_e[p mod N]` of epoch e = p // N, where perm_e is a
    permutation seeded by (seed, e). Step s covers positions [s·B, (s+1)·B); rank r takes the
    r-th contiguous slice of B / world. Restarting at any step reproduces the same batches.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, rank: int, world: int,
                 start_step: int = 0):
        self.n, self.batch, self.seed = num_items, global_batch, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=gen), epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        per_rank = self.batch // self.world
        first = step * self.batch + self.rank * per_rank
        out = []
        for p in range(first, first + per_rank):
            out.append(int(self._permutation(p // self.n)[p % self.n]))
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self):  # DataLoader asks; the stream is effectively endless
        return 2**62
