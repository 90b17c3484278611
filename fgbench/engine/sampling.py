"""ADSH-style epoch sampling: each epoch is one pass over a random subset of the training split.

ADSH (Jiang & Li, AAAI 2018, Alg. 1) and the code bases built on it (the
ExchNet reference, aassxun/DSH_Analysis ``adsh_exchnet.py``) train in
*outer iterations*: draw ``epoch_sample`` training images at random, run
``resample_every`` epochs over them, draw afresh.  With
``protocol.epoch_sample > 0`` the training loader uses
:class:`ResampledBatchSampler`; the subset of outer iteration ``o`` is
:func:`epoch_subset` ``(n, size, seed, o)``, a function of the job's seed and
``o`` only, so a killed and resumed run draws the same subsets (the order
within an epoch comes from the loader's generator, which checkpoints carry).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from fgbench.engine.distributed import GlobalBatchSampler

__all__ = ["ResampledBatchSampler", "epoch_subset", "steps_per_epoch"]


def epoch_subset(n: int, size: int, seed: int, outer: int) -> np.ndarray:
    """The ``min(size, n)`` training indices of outer iteration ``outer`` (sorted), from (seed, outer) alone."""
    rng = np.random.default_rng([int(seed), int(outer), 0xADD5])
    return np.sort(rng.choice(n, size=min(int(size), n), replace=False))


def steps_per_epoch(n: int, batch_size: int, epoch_sample: int = 0, world: int = 1) -> int:
    """Optimizer steps of one epoch over ``n`` training images (``epoch_sample`` of them when > 0)."""
    m = min(epoch_sample, n) if epoch_sample > 0 else n
    generator = torch.Generator()
    return len(GlobalBatchSampler(m, batch_size, generator, drop_last=m > batch_size, world=world))


class ResampledBatchSampler(Sampler[list[int]]):
    """Global batches over the subset of the current outer iteration (call :meth:`set_epoch` before each epoch).

    The batches are those of :class:`~fgbench.engine.distributed.GlobalBatchSampler`
    over the ``epoch_sample`` subset (shuffled by ``generator`` each epoch,
    split across ranks), mapped back to indices of the whole training split,
    so methods with per-image memories see the image's own index.
    """

    def __init__(self, n: int, epoch_sample: int, resample_every: int, seed: int, batch_size: int,
                 generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        self.n, self.size, self.every, self.seed = n, min(int(epoch_sample), n), int(resample_every), int(seed)
        self.inner = GlobalBatchSampler(self.size, batch_size, generator, drop_last=self.size > batch_size,
                                        rank=rank, world=world)
        self.outer = -1
        self.subset = epoch_subset(n, self.size, self.seed, 0)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        outer = int(epoch) // self.every
        if outer != self.outer:
            self.outer, self.subset = outer, epoch_subset(self.n, self.size, self.seed, outer)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.inner:
            yield [int(self.subset[i]) for i in batch]
