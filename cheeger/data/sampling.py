"""Sample orders: a training order a resumed run can replay, and evaluation shards.

``ResumableSampler`` shuffles with a generator seeded by ``seed + epoch`` (the
order torch's ``DistributedSampler`` draws, sharded the same way over ranks),
so the order of any epoch is known without replaying the epochs before it, and
it can start part-way through an epoch (``start``: samples of this rank's share
to skip). It yields keys ``(index, augmentation_seed)`` rather than bare
indices: ``SegmentationDataset`` reseeds its random transform with the second
number, so the crop, flip and colour jitter a sample gets depend on (seed,
epoch, index) only, not on what the process did before. Together these make a
resumed run see the same batches, augmented the same way, as a run that was
never interrupted.

Being a ``DistributedSampler``, it is kept as is by Lightning under DDP (which
would otherwise wrap it) and receives ``set_epoch`` at every epoch start.

``EvalShardSampler`` splits a val/test split over data-parallel ranks *without*
padding: torch's ``DistributedSampler`` (which Lightning would inject) repeats
samples until every rank holds the same number, so a split of 5 images on 2
ranks would count one image twice in the dataset-level metrics. Evaluation runs
no collective per batch (metric states are summed once, at the epoch end), so
ranks may hold different numbers of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
from torch.utils.data.distributed import DistributedSampler

SampleKey = tuple[int, int]
"""(dataset index, augmentation seed)."""


class ResumableSampler(DistributedSampler):
    """Shuffled keys ``(index, augmentation_seed)`` for one rank, from any epoch and offset.

    Args:
        dataset: the sized dataset to draw from (N samples).
        seed: non-negative seed of the order and of the augmentation seeds.
        num_replicas, rank: data-parallel world size and this process's rank;
            the epoch order is padded to a multiple of ``num_replicas`` and rank r
            takes every ``num_replicas``-th entry from position r.
        epoch: the epoch whose order is drawn until the next ``set_epoch``.
        start: number of this rank's samples of ``epoch`` already consumed; they
            are skipped. ``set_epoch`` with another epoch resets it to 0.
        shuffle: False keeps the index order (the keys still carry seeds).

    ``len()`` is the rank's full share of an epoch, whatever ``start``: Lightning
    counts the batches of a resumed epoch from its own restored progress.
    """

    def __init__(
        self,
        dataset: Sized,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, found {seed!r}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, found {epoch}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        if not 0 <= start <= self.num_samples:
            raise ValueError(
                f"start must be in [0, {self.num_samples}] (this rank's samples per epoch), "
                f"found {start}"
            )
        self.epoch = epoch
        self.start = start

    def set_epoch(self, epoch: int) -> None:
        """Draw ``epoch``'s order from now on; a new epoch starts at its beginning."""
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def augmentation_seeds(self, epoch: int) -> np.ndarray:
        """(N,) uint32: the seed of each sample's augmentation in ``epoch``."""
        return np.random.SeedSequence((self.seed, epoch)).generate_state(len(self.dataset))

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(super().__iter__())[self.start :]
        seeds = self.augmentation_seeds(self.epoch)
        return iter([(int(i), int(seeds[i])) for i in indices])


class EvalShardSampler(DistributedSampler):
    """Rank ``rank``'s share of an evaluation split: indices rank, rank + W, rank + 2W, ...

    Every index of the N samples goes to exactly one of the W = ``num_replicas``
    ranks (no padding, no shuffling); rank r holds ceil((N - r) / W) of them.

    Args:
        dataset: the sized dataset to split (N samples).
        num_replicas, rank: data-parallel world size W and this process's rank.

    Raises:
        ValueError: N < W; a rank without samples would skip the evaluation epoch
            and leave the others waiting for its metric states.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        if len(dataset) < num_replicas:
            raise ValueError(
                f"the evaluation split has {len(dataset)} samples, fewer than the "
                f"{num_replicas} data-parallel processes (trainer.devices x trainer.num_nodes); "
                "evaluate with fewer devices"
            )
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))
