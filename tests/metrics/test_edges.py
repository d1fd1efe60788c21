"""Edge AUC of a pixel graph against the labels, against a pairwise count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cheeger.metrics.edges import EdgeAUC, binned_auc, edge_targets, weight_histogram
from cheeger.ops.grid import grid_graph


def pairwise_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(same > different) + P(tie) / 2 by comparing every pair."""
    wins = sum(
        1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(same, different)
    )
    return wins / (len(same) * len(different))


def test_binned_auc_equals_the_pairwise_count_on_bin_centres():
    rng = np.random.default_rng(0)
    bins = 50
    centres = (np.arange(bins) + 0.5) / bins
    same = rng.choice(centres[20:], 40)
    different = rng.choice(centres[:35], 30)  # overlapping ranges, with ties
    auc = binned_auc(
        weight_histogram(torch.from_numpy(same), bins),
        weight_histogram(torch.from_numpy(different), bins),
    )
    assert float(auc) == pytest.approx(pairwise_auc(same, different), abs=1e-12)


def test_edge_targets_label_each_slot_and_skip_padding_and_ignore():
    # A 3 x 4 image, labels 0 | 1 split between columns 1 and 2, one ignored pixel.
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 255, 1, 1]]])
    graph = grid_graph(torch.zeros(1, 1, 3, 4), 1, 1.0)
    weight, same, valid = edge_targets(graph, target, (3, 4))
    index = graph.index[0]
    labels = target.flatten()
    for node, slot in itertools.product(range(12), range(index.shape[1])):
        other = int(index[node, slot])
        real = other != node
        labelled = labels[node] != 255 and labels[other] != 255
        assert bool(valid[0, node, slot]) == (real and bool(labelled))
        if valid[0, node, slot]:
            assert bool(same[0, node, slot]) == bool(labels[node] == labels[other])


def test_metric_accumulates_and_separating_graph_scores_one():
    # An image whose colour follows the labels: the image graph separates them perfectly.
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    image = target.unsqueeze(1).float().expand(-1, 3, -1, -1) * 2.0
    graph = grid_graph(image, 1, 0.5)
    metric = EdgeAUC()
    metric.update(graph, target, (8, 8))
    assert float(metric.compute()["edge_auc"]) == pytest.approx(1.0)
    blind = grid_graph(torch.zeros(2, 3, 8, 8), 1, 0.5)  # all weights equal: all ties
    metric.reset()
    metric.update(blind, target, (8, 8))
    assert float(metric.compute()["edge_auc"]) == pytest.approx(0.5)
    # Labels at a coarser graph's resolution come by nearest-neighbour sampling.
    coarse = grid_graph(image[..., ::2, ::2], 1, 0.5)
    metric.reset()
    metric.update(coarse, target, (4, 4))
    assert float(metric.compute()["edge_auc"]) == pytest.approx(1.0)


def test_no_edges_of_one_kind_is_nan():
    metric = EdgeAUC()
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    metric.update(grid_graph(torch.zeros(1, 1, 4, 4), 1, 1.0), target, (4, 4))
    assert np.isnan(float(metric.compute()["edge_auc"]))
    with pytest.raises(ValueError, match="cannot be an"):
        metric.update(grid_graph(torch.zeros(1, 1, 4, 4), 1, 1.0), target, (2, 8 + 1))
