"""jacobi_eigh against numpy.linalg.eigh: eigenvalues, spectral projectors, invariants."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from tests.ops.jacobi_reference import _round_robin_layouts, jacobi_eigh
from tests.ops.spectra import component_laplacian, indicator_basis, random_symmetric, with_spectrum


def cluster_projectors(values: np.ndarray, vectors: np.ndarray, gap: float = 1e-6):
    """Projectors onto the eigenspaces of (numerically) equal eigenvalues, ascending."""
    groups, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] - values[i - 1] > gap:
            block = vectors[:, start:i]
            groups.append(block @ block.T)
            start = i
    return groups


def assert_same_eigensystem(a: torch.Tensor, values, vectors, value_tol, projector_tol):
    ref_values, ref_vectors = np.linalg.eigh(a.double().numpy())
    values, vectors = values.double().numpy(), vectors.double().numpy()
    for b in range(a.shape[0]):
        np.testing.assert_allclose(values[b], ref_values[b], rtol=0, atol=value_tol)
        ours = cluster_projectors(ref_values[b], vectors[b])
        theirs = cluster_projectors(ref_values[b], ref_vectors[b])
        for p, q in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p, q, rtol=0, atol=projector_tol)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33])
def test_matches_numpy_on_random_matrices(n):
    a = random_symmetric(3, n, seed=n)
    values, vectors = jacobi_eigh(a)
    assert values.shape == (3, n) and vectors.shape == (3, n, n)
    assert torch.all(values[:, 1:] >= values[:, :-1])
    assert_same_eigensystem(a, values, vectors, value_tol=1e-10, projector_tol=1e-8)
    eye = torch.eye(n, dtype=a.dtype)
    assert torch.allclose(vectors.transpose(-1, -2) @ vectors, eye, atol=1e-12, rtol=0)
    assert torch.allclose(a @ vectors, vectors * values.unsqueeze(-2), atol=1e-11, rtol=0)


def test_n128_batch_is_accurate():
    a = random_symmetric(2, 128, seed=128)
    values, vectors = jacobi_eigh(a)
    assert_same_eigensystem(a, values, vectors, value_tol=1e-10, projector_tol=1e-8)
    residual = (a @ vectors - vectors * values.unsqueeze(-2)).abs().max()
    assert residual < 1e-11


def test_repeated_eigenvalues_give_the_eigenspace_projectors():
    spectrum = [-1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    a = with_spectrum(spectrum, seed=0)[0].unsqueeze(0)
    values, vectors = jacobi_eigh(a)
    np.testing.assert_allclose(values[0].numpy(), np.sort(spectrum), atol=1e-12, rtol=0)
    assert_same_eigensystem(a, values, vectors, value_tol=1e-12, projector_tol=1e-10)


def test_disconnected_graph_laplacian_null_space():
    sizes = [4, 6, 3]
    lap, labels = component_laplacian(sizes, seed=1)
    values, vectors = jacobi_eigh(torch.from_numpy(lap))
    assert int((values.abs() < 1e-10).sum()) == len(sizes)
    null = vectors[:, : len(sizes)].numpy()
    indicator = indicator_basis(labels)
    np.testing.assert_allclose(null @ null.T, indicator @ indicator.T, atol=1e-10, rtol=0)


def test_float32_to_single_precision_tolerance():
    a = random_symmetric(2, 12, seed=5, dtype=torch.float32)
    values, vectors = jacobi_eigh(a)
    assert values.dtype == torch.float32 and vectors.dtype == torch.float32
    assert_same_eigensystem(a, values, vectors, value_tol=1e-5, projector_tol=1e-4)


def test_sign_convention_batch_consistency_and_determinism():
    a = random_symmetric(4, 9, seed=9)
    values, vectors = jacobi_eigh(a)
    rows = vectors.abs().argmax(-2, keepdim=True)
    assert torch.all(vectors.gather(-2, rows) > 0)
    again = jacobi_eigh(a)
    assert torch.equal(values, again[0]) and torch.equal(vectors, again[1])
    single_values, single_vectors = jacobi_eigh(a[2])
    torch.testing.assert_close(single_values, values[2], rtol=0, atol=1e-13)
    torch.testing.assert_close(single_vectors, vectors[2], rtol=0, atol=1e-11)


def test_shapes_unbatched_and_leading_dimensions():
    a = random_symmetric(6, 5, seed=3)
    values, vectors = jacobi_eigh(a[0])
    assert values.shape == (5,) and vectors.shape == (5, 5)
    values, vectors = jacobi_eigh(a.reshape(2, 3, 5, 5))
    assert values.shape == (2, 3, 5) and vectors.shape == (2, 3, 5, 5)
    flat_values, _ = jacobi_eigh(a)
    torch.testing.assert_close(values.reshape(6, 5), flat_values, rtol=0, atol=1e-13)


def test_diagonal_and_zero_matrices_are_returned_exactly():
    d = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    values, vectors = jacobi_eigh(torch.diag(d))
    assert values.tolist() == [-1.0, 0.5, 2.0, 3.0]
    assert torch.equal(vectors.abs(), torch.eye(4, dtype=d.dtype)[:, [1, 3, 2, 0]])
    values, vectors = jacobi_eigh(torch.zeros(3, 3, dtype=torch.float64))
    assert values.tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(vectors, torch.eye(3, dtype=torch.float64))


def test_outputs_carry_no_gradient():
    a = random_symmetric(1, 4, seed=2).requires_grad_(True)
    values, vectors = jacobi_eigh(a)
    assert not values.requires_grad and not vectors.requires_grad


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10, 128])
def test_round_robin_visits_every_pair_once_in_disjoint_rounds(n):
    layouts = _round_robin_layouts(n)
    assert len(layouts) == n - 1
    seen = []
    for layout in layouts:
        assert sorted(layout) == list(range(n))
        half = n // 2
        seen += [frozenset((layout[i], layout[i + half])) for i in range(half)]
    assert sorted(seen, key=sorted) == sorted(
        (frozenset(p) for p in itertools.combinations(range(n), 2)), key=sorted
    )


def test_too_few_sweeps_warns():
    a = random_symmetric(1, 16, seed=4)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        jacobi_eigh(a, max_sweeps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jacobi_eigh(a)


@pytest.mark.parametrize(
    ("bad", "kwargs", "message"),
    [
        (torch.zeros(3, 4, dtype=torch.float64), {}, "square"),
        (torch.zeros(4, dtype=torch.float64), {}, "square"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64), {}, "symmetric"),
        (torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), {}, "finite"),
        (torch.eye(2, dtype=torch.int64), {}, "float32 or float64"),
        (torch.eye(2), {"tol": 0.0}, "tol"),
        (torch.eye(2), {"max_sweeps": -1}, "max_sweeps"),
    ],
)
def test_bad_input_raises_naming_the_argument(bad, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jacobi_eigh(bad, **kwargs)
