"""WeightedMean: Σ w x / Σ w, NaN kept, summed states."""

from __future__ import annotations

import math

import pytest
import torch

from cheeger.metrics.mean import WeightedMean


def test_weighted_mean_of_batches_equals_the_mean_over_samples():
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(11, generator=g, dtype=torch.float64)
    mean = WeightedMean()
    for batch in samples.split(4):  # batches of 4, 4 and 3: a mean per batch, then weighted
        mean.update(batch.mean().float(), len(batch))
    assert float(mean.compute()) == pytest.approx(float(samples.mean()), rel=1e-6)


def test_states_merged_from_two_shards_give_the_whole_mean():
    # What a data-parallel sync does: add the states of the ranks.
    first, second, whole = WeightedMean(), WeightedMean(), WeightedMean()
    for metric, values in ((first, [(1.0, 2), (3.0, 1)]), (second, [(5.0, 2)])):
        for value, weight in values:
            metric.update(torch.tensor(value), weight)
            whole.update(torch.tensor(value), weight)
    first.merge_state(second)
    assert float(first.compute()) == float(whole.compute()) == pytest.approx(15.0 / 5)


def test_nan_stays_visible_and_bad_input_is_named():
    mean = WeightedMean()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(mean.compute()))  # nothing yet
    mean.update(torch.tensor(1.0), 2)
    mean.update(torch.tensor(float("nan")), 1)
    assert math.isnan(float(mean.compute()))
    with pytest.raises(ValueError, match="scalar"):
        mean.update(torch.ones(2), 1)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        mean.update(torch.tensor(1.0), -1)
