"""ResumableSampler: an epoch's order from (seed, epoch) alone, resumable at any offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from cheeger.data.sampling import EvalShardSampler, ResumableSampler


def keys(sampler) -> list[tuple[int, int]]:
    return list(sampler)


def test_order_is_the_seeded_permutation_of_the_epoch():
    sampler = ResumableSampler(range(10), seed=3, epoch=2)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3 + 2)).tolist()
    assert [i for i, _ in keys(sampler)] == expected
    assert len(sampler) == 10
    # A fresh sampler set to the same epoch draws the same keys, augmentation seeds included.
    other = ResumableSampler(range(10), seed=3)
    other.set_epoch(2)
    assert keys(other) == keys(sampler)
    # Another epoch or seed: another order.
    other.set_epoch(3)
    assert [i for i, _ in keys(other)] != expected
    assert keys(ResumableSampler(range(10), seed=4, epoch=2)) != keys(sampler)


def test_augmentation_seeds_depend_on_seed_epoch_and_index_only():
    sampler = ResumableSampler(range(50), seed=7, epoch=1)
    seeds = dict(keys(sampler))
    reference = np.random.SeedSequence((7, 1)).generate_state(50)
    assert seeds == {i: int(reference[i]) for i in range(50)}
    assert len(set(seeds.values())) == 50  # distinct per sample
    assert dict(keys(ResumableSampler(range(50), seed=7, epoch=2))) != seeds


def test_start_skips_the_consumed_part_and_a_new_epoch_starts_over():
    full = keys(ResumableSampler(range(12), seed=0, epoch=1))
    resumed = ResumableSampler(range(12), seed=0, epoch=1, start=5)
    assert keys(resumed) == full[5:]
    assert len(resumed) == 12  # the epoch length, whatever was consumed
    resumed.set_epoch(1)  # Lightning calls this for the epoch it resumes: no effect
    assert keys(resumed) == full[5:]
    resumed.set_epoch(2)
    assert resumed.start == 0
    assert keys(resumed) == keys(ResumableSampler(range(12), seed=0, epoch=2))
    assert keys(ResumableSampler(range(12), seed=0, epoch=1, start=12)) == []


def test_ranks_split_the_epoch_and_resume_within_their_share():
    ranks = [ResumableSampler(range(11), seed=5, num_replicas=3, rank=r) for r in range(3)]
    shares = [[i for i, _ in keys(r)] for r in ranks]
    assert [len(s) for s in shares] == [4, 4, 4]  # padded to 12 by repeating the start
    order = torch.randperm(11, generator=torch.Generator().manual_seed(5)).tolist()
    padded = order + order[:1]
    assert shares == [padded[r::3] for r in range(3)]
    resumed = ResumableSampler(range(11), seed=5, num_replicas=3, rank=1, start=2)
    assert [i for i, _ in keys(resumed)] == shares[1][2:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": 1.5}, "seed must be an int >= 0"),
        ({"seed": 0, "start": 11}, r"start must be in \[0, 10\]"),
        ({"seed": 0, "epoch": -1}, "epoch must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResumableSampler(range(10), **kwargs)


@pytest.mark.parametrize("size, world", [(5, 2), (7, 3), (4, 4), (6, 1)])
def test_eval_shards_cover_every_index_exactly_once(size, world):
    shards = [list(EvalShardSampler(range(size), world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))  # no repeats
    assert shards == [list(range(rank, size, world)) for rank in range(world)]
    assert [len(EvalShardSampler(range(size), world, r)) for r in range(world)] == [
        len(s) for s in shards
    ]


def test_eval_shards_are_kept_by_lightning_and_need_a_sample_per_rank():
    # A DistributedSampler: Lightning leaves it in place instead of wrapping the loader.
    assert isinstance(EvalShardSampler(range(3), 2, 1), DistributedSampler)
    with pytest.raises(ValueError, match="3 samples, fewer than the 4 data-parallel"):
        EvalShardSampler(range(3), 4, 0)
