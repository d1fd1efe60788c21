"""Affinity supervision: BCE of edge weights against same-label targets."""

from __future__ import annotations

import math

import pytest
import torch

from cheeger.losses.affinity import AffinitySupervision
from cheeger.ops.graph import NeighborGraph
from cheeger.ops.grid import grid_graph


def line_graph(weights):
    """Three nodes in a row (a 1 x 3 grid): edges 0-1 and 1-2 with the given weights."""
    index = torch.tensor([[[1, 0], [0, 2], [1, 2]]])  # node 2's second slot is padding
    w = torch.tensor([[[weights[0], 0.0], [weights[0], weights[1]], [weights[1], 0.0]]])
    return NeighborGraph(index, w.requires_grad_(True))


def test_balanced_bce_by_hand():
    graph = line_graph([0.8, 0.3])
    target = torch.tensor([[[0, 0, 1]]])  # 0-1 same label, 1-2 different
    aux = {"graph": graph, "graph_size": (1, 3)}
    loss = AffinitySupervision()(torch.zeros(1, 2, 1, 3), target, aux)
    # Each edge appears in both rows: the means per kind are over equal values.
    expected = 0.5 * (-math.log(0.8) - math.log(1 - 0.3))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    plain = AffinitySupervision(balanced=False)(torch.zeros(1, 2, 1, 3), target, aux)
    assert float(plain.detach()) == pytest.approx(expected, rel=1e-6)  # 2 and 2 slots: same mean
    loss.backward()
    assert float(graph.weight.grad[0, 0, 0]) < 0  # a same-label edge is pushed up
    assert float(graph.weight.grad[0, 2, 0]) > 0  # a boundary edge is pushed down


def test_ignored_pixels_and_padding_leave_no_trace():
    graph = line_graph([0.8, 0.3])
    target = torch.tensor([[[0, 0, 255]]])
    loss = AffinitySupervision()(
        torch.zeros(1, 2, 1, 3), target, {"graph": graph, "graph_size": (1, 3)}
    )
    assert float(loss) == pytest.approx(-math.log(0.8), rel=1e-6)


def test_gradient_reaches_the_affinity_bandwidth_and_lowers_the_loss():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[:, :, 3:] = 1
    image = target.unsqueeze(1).float().expand(-1, 3, -1, -1) + 0.05 * torch.randn(1, 3, 6, 6)
    log_sigma = torch.tensor(0.0, requires_grad=True)
    term = AffinitySupervision()
    losses = []
    optimizer = torch.optim.SGD([log_sigma], lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        graph = grid_graph(image, 1, log_sigma.exp())
        loss = term(torch.zeros(1, 2, 6, 6), target, {"graph": graph, "graph_size": (6, 6)})
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_missing_aux_names_the_term_and_the_head():
    with pytest.raises(ValueError, match="'affinity' needs aux\\['graph'\\]"):
        AffinitySupervision()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), {})
