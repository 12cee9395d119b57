"""Epoch-seeded shuffling: epoch e's order depends only on (seed, e), never on the global RNG.

So a run resumed from its last checkpoint sees the same batches as an uninterrupted one. Under DDP
(`trainer=ddp` turns off Lightning's own distributed sampler) rank r of W takes perm[r::W], so a
step on W processes with batch B covers the same items as one process with batch W*B on the same
permutation: the two give the same model up to float tolerance. When W does not divide the item
count, the last n % W items of the permutation are left out of that epoch on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        rank, world = _rank_world()
        perm = torch.randperm(self.num_items, generator=g)[: len(self) * world]
        return iter(perm[rank::world].tolist())

    def __len__(self) -> int:
        return self.num_items // _rank_world()[1]
