"""The solver's loops do not read the device at every iteration (GPU synchronisations).

Every host read of a tensor (``item``, ``tolist``, ``cpu``, ``numpy``, ``bool``, ``float``,
``int``) is counted during one solve and its backward. When the iteration count grows
tenfold, the forward's count grows by a small fraction of the added iterations (one
read per convergence check), and the backward's stays flat.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch

from cheeger.ops.graph import NeighborGraph
from cheeger.ops.partial_eigh import partial_eigh
from tests.ops.test_partial_eigh import point_graph

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def host_reads():
    """Counter of host reads of tensors made inside the block."""
    counts: Counter = Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, original):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return read

    for name, original in saved.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def test_counter_sees_every_kind_of_read():
    t = torch.tensor([1.0, 2.0])
    with host_reads() as counts:
        float(t.sum()), bool((t > 0).all()), int(t[0]), t.tolist()
    assert sum(counts.values()) == 4


@pytest.fixture(scope="module")
def graph():
    return point_graph(1000, seed=3)


def solve_and_backward(graph, degree):
    weight = graph.weight.clone().requires_grad_(True)
    with host_reads() as forward:
        values, vectors, info = partial_eigh(
            NeighborGraph(graph.index, weight), 6, tol=1e-8, degree=degree, max_iter=500
        )
    assert info.converged
    with host_reads() as backward:
        (values.sum() + vectors.pow(3).sum()).backward()
    assert torch.isfinite(weight.grad).all()
    return info.iterations, sum(forward.values()), sum(backward.values())


def test_host_reads_do_not_grow_with_the_iterations(graph):
    few, forward_few, backward_few = solve_and_backward(graph, degree=24)
    many, forward_many, backward_many = solve_and_backward(graph, degree=2)
    assert many >= 8 * few  # a low filter degree needs many more iterations
    # Before: about 8 reads per iteration (389 for 49 iterations); now one per check,
    # and the checks of a long solve are a small share of its iterations.
    assert forward_few <= 30
    assert forward_many - forward_few <= 0.5 * (many - few), (few, many, forward_many)
    assert backward_few <= 25 and backward_many <= 25


def head_step_reads(compose_train, degree: int) -> tuple[int, int]:
    """(solver iterations, host reads) of one SpectralHead training step at the
    default configuration (head=spectral) with the solver's filter degree set."""
    from cheeger.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule.from_config(
        compose_train("head=spectral", f"solver.degree={degree}", "solver.tol=1e-6")
    )
    head = module.head.train()
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, head.in_channels, 24, 32, generator=g).requires_grad_(True)
    image = torch.rand(1, 3, 24, 32, generator=g)
    labels = torch.randint(0, 19, (1, 24, 32), generator=g)
    with host_reads() as counts:
        logits, aux = head(features, image)
        torch.nn.functional.cross_entropy(logits, labels).backward()
    assert torch.isfinite(features.grad).all()
    return aux["spectral_info"].iterations, sum(counts.values())


def test_head_step_reads_do_not_grow_with_the_iterations(compose_train):
    few, reads_few = head_step_reads(compose_train, degree=16)
    many, reads_many = head_step_reads(compose_train, degree=2)
    assert many >= 4 * few, (few, many)
    # Graph construction, checks of the inputs and the solver's entry: a fixed ~20 reads
    # (53 before derived graphs skipped the construction checks); then one per check.
    assert reads_few <= 40, reads_few
    assert reads_many - reads_few <= 0.5 * (many - few), (few, many, reads_few, reads_many)
