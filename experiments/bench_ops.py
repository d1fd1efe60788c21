"""Timings of the graph ops in ``cheeger.ops`` against numpy/scipy/torch references.

Rows (C = 64 features, float32, medians over repeats after one warm-up call):

* kNN graph build (k = 16, Gaussian weights, union): ``knn_graph`` vs a numpy
  reference (blocked matrix products + ``argpartition``, scipy sparse max(A, A^T)).
* grid window graph build (bilateral, square window r = 2 and r = 3): ``grid_graph``
  vs a numpy reference that shifts the padded map once per offset.
* L_sym X with m = 16 columns: ``laplacian_matvec`` vs a prebuilt scipy CSR matrix.
* W X with m = 16: ``adjacency_matvec`` (torch CSR inside) vs the neighbour-list
  gather formulation out_i = sum_j w_ij x_(index_ij), the obvious alternative.
* W X forward + backward in the weights: ``adjacency_matvec`` (custom backward) vs
  torch's own CSR autograd.
* dense eigh forward + backward (k = 16 smallest, loss sum(R * V^2), R random):
  ``cheeger.ops.eigh.eigh(backward="lorentzian")`` vs ``torch.linalg.eigh``, N <= 4096.

Every reference is checked to give the same output as cheeger's op before it is
timed. Writes a markdown table to experiments/results/bench_ops.md. Run from the
repository root:

    .venv/bin/python experiments/bench_ops.py           # full, several minutes
    .venv/bin/python experiments/bench_ops.py --quick   # small sizes, seconds
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse
import torch
from timing import median_seconds, pin_blas_threads

from cheeger.ops.graph import NeighborGraph, adjacency_matvec, to_scipy
from cheeger.ops.grid import grid_graph
from cheeger.ops.knn import knn_graph
from cheeger.ops.laplacian import laplacian_matvec, laplacian_to_dense, laplacian_to_scipy

CHANNELS, K_NN, COLUMNS, K_EIG = 64, 16, 16, 16
CAP = 32  # max_degree of the capped union graphs (2k)
SIGMA = 8.0  # 2 sigma^2 = 128 = E|x - y|^2 of two standard normal 64-d points
OUT = Path(__file__).resolve().parent / "results" / "bench_ops.md"


def clustered_features(rng: np.random.Generator, n: int, clusters: int = 16) -> np.ndarray:
    """(n, C) float32: 16 Gaussian clusters, the shape of a trained network's features."""
    centres = rng.standard_normal((clusters, CHANNELS)) * 2.0
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + rng.standard_normal((n, CHANNELS))).astype(np.float32)


# --------------------------------------------------------------------------- references


def reference_knn_graph(x: np.ndarray, k: int, sigma: float) -> scipy.sparse.csr_matrix:
    """Exact kNN by blocks of rows and argpartition, Gaussian weights, max(A, A^T)."""
    n = x.shape[0]
    x = x - x.mean(0)
    norms = (x * x).sum(1)
    chunk = max(1, (1 << 22) // n)
    neighbours = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        scores = norms[None, :] - 2.0 * (x[start:stop] @ x.T)
        scores[np.arange(stop - start), np.arange(start, stop)] = np.inf
        neighbours[start:stop] = np.argpartition(scores, k, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.reshape(-1)
    diff = x[rows] - x[cols]
    weight = np.exp(-(diff * diff).sum(1) / (2 * sigma**2))
    directed = scipy.sparse.csr_matrix((weight, (rows, cols)), shape=(n, n))
    return directed.maximum(directed.T).tocsr()


def reference_grid_graph(
    f: np.ndarray, radius: int, sigma_f: float, sigma_x: float
) -> tuple[np.ndarray, np.ndarray]:
    """Square-window bilateral graph of one (C, h, w) map: index, weight (N, K)."""
    channels, height, width = f.shape
    span = range(-radius, radius + 1)
    offsets = [(dy, dx) for dy in span for dx in span if (dy, dx) != (0, 0)]
    padded = np.pad(f, ((0, 0), (radius, radius), (radius, radius)))
    rows, cols = np.mgrid[0:height, 0:width]
    own = rows * width + cols
    index = np.empty((height, width, len(offsets)), dtype=np.int64)
    weight = np.empty((height, width, len(offsets)), dtype=f.dtype)
    for slot, (dy, dx) in enumerate(offsets):
        shifted = padded[:, radius + dy : radius + dy + height, radius + dx : radius + dx + width]
        diff = f - shifted
        d2 = np.einsum("chw,chw->hw", diff, diff)
        inside = (rows + dy >= 0) & (rows + dy < height) & (cols + dx >= 0) & (cols + dx < width)
        exponent = d2 / (2 * sigma_f**2) + (dy * dy + dx * dx) / (2 * sigma_x**2)
        weight[..., slot] = np.exp(-exponent) * inside
        index[..., slot] = np.where(inside, own + dy * width + dx, own)
    return index.reshape(height * width, -1), weight.reshape(height * width, -1)


def check_same_graph(ours: scipy.sparse.csr_matrix, reference: scipy.sparse.csr_matrix, n: int):
    """Same weights on shared edges; edge sets equal up to float32 near-ties in the
    neighbour ranking (two candidates whose distances round differently)."""
    ours_edges, reference_edges = ours.astype(bool), reference.astype(bool)
    shared = ours_edges.multiply(reference_edges)
    differing = (ours_edges != reference_edges).nnz
    assert differing <= 1e-3 * reference_edges.nnz, f"N={n}: {differing} edges differ"
    gap = abs(ours.multiply(shared) - reference.multiply(shared))
    assert gap.nnz == 0 or gap.max() < 1e-4, f"N={n}: weights differ by {gap.max()}"
    return differing


def gather_matvec(graph: NeighborGraph, x: torch.Tensor) -> torch.Tensor:
    """W X as one gather of the (B, N, K, m) neighbour block and a weighted sum."""
    batch, n, slots = graph.index.shape
    block = x.reshape(batch * n, -1).index_select(0, graph.index.reshape(-1))
    block = block.view(batch * n, slots, -1)
    return torch.bmm(graph.weight.view(batch * n, 1, slots), block).view(batch, n, -1)


# --------------------------------------------------------------------------- rows


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float | None, float | None]] = []
        self.notes: list[str] = []

    def add(self, op: str, size: str, ours: float | None, reference: float | None) -> None:
        self.rows.append((op, size, ours, reference))
        print(f"  {op:58s} {size:>16s} {_fmt(ours):>10s} {_fmt(reference):>10s}", flush=True)

    def markdown(self) -> str:
        lines = [
            "| op | N | cheeger median | reference median | ratio reference/cheeger |",
            "|---|---|---|---|---|",
        ]
        for op, size, ours, reference in self.rows:
            ratio = f"{reference / ours:.2f}" if ours and reference else "n/a"
            lines.append(f"| {op} | {size} | {_fmt(ours)} | {_fmt(reference)} | {ratio} |")
        return "\n".join(lines)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "skipped"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.2f} ms"


def bench_knn_and_products(table: Table, sizes: list[int], repeats: int, rng) -> dict:
    """kNN build, L_sym X, W X, W X fwd+bwd; returns the kNN graphs by N."""
    graphs, capped = {}, {}
    for n in sizes:
        x_np = clustered_features(rng, n)
        x = torch.from_numpy(x_np).unsqueeze(0)
        knn_repeats = repeats if n <= 16384 else max(1, repeats // 2)
        graph = knn_graph(x, K_NN, sigma=SIGMA)
        ours_sparse = to_scipy(graph)[0]
        reference = reference_knn_graph(x_np, K_NN, SIGMA)
        differing = check_same_graph(ours_sparse, reference, n)
        if differing:
            table.notes.append(
                f"N={n}: cheeger's and the reference's kNN edge sets differ in {differing} of "
                f"{reference.nnz} stored entries (float32 near-ties in the ranking)"
            )
        ours = median_seconds(lambda x=x: knn_graph(x, K_NN, sigma=SIGMA), knn_repeats)
        ref = median_seconds(lambda x_np=x_np: reference_knn_graph(x_np, K_NN, SIGMA), knn_repeats)
        table.add("kNN graph build, k=16, union (ref: numpy argpartition)", str(n), ours, ref)
        graphs[n] = graph
        capped[n] = knn_graph(x, K_NN, sigma=SIGMA, max_degree=CAP)
        for name, g in (("union kNN graph", graph), (f"capped at {CAP}", capped[n])):
            degree_count = (g.weight > 0).sum(-1).float()
            table.notes.append(
                f"N={n}, {name}: padded width K' = {g.max_degree}, "
                f"mean degree {degree_count.mean():.1f}, nnz = {int(degree_count.sum())}"
            )

    for label, collection in (("", graphs), (f", max_degree={CAP}", capped)):
        for n, graph in collection.items():
            vectors = torch.randn(1, n, COLUMNS)
            laplacian = laplacian_to_scipy(graph, "symmetric")[0].astype(np.float32)
            vectors_np = vectors[0].numpy()
            expected = laplacian @ vectors_np
            got = laplacian_matvec(graph, vectors, "symmetric")[0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-4)
            ours = median_seconds(
                lambda g=graph, v=vectors: laplacian_matvec(g, v, "symmetric"), repeats * 4
            )
            ref = median_seconds(lambda m=laplacian, v=vectors_np: m @ v, repeats * 4)
            table.add(f"L_sym X, m=16{label} (ref: scipy CSR @ dense)", str(n), ours, ref)

    for n, graph in graphs.items():
        vectors = torch.randn(1, n, COLUMNS)
        torch.testing.assert_close(
            adjacency_matvec(graph, vectors), gather_matvec(graph, vectors), rtol=1e-4, atol=1e-4
        )
        ours = median_seconds(lambda g=graph, v=vectors: adjacency_matvec(g, v), repeats * 4)
        ref = median_seconds(lambda g=graph, v=vectors: gather_matvec(g, v), repeats * 4)
        table.add("W X, m=16 (ref: neighbour-list gather + bmm)", str(n), ours, ref)

    for n, graph in graphs.items():
        vectors = torch.randn(1, n, COLUMNS)
        probe = torch.randn(1, n, COLUMNS)
        weight = graph.weight.detach().clone().requires_grad_()

        def ours_step(g=graph, w=weight, v=vectors, p=probe):
            out = adjacency_matvec(NeighborGraph(g.index, w), v)
            return torch.autograd.grad((out * p).sum(), w)[0]

        # torch's CSR autograd coalesces repeated (row, column) pairs, so the reference
        # matrix stores the edges only (no padding) and its value gradient is compared
        # with ours on those slots.
        edges = graph.weight[0] > 0
        crow = torch.zeros(n + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(edges.sum(-1), 0)
        columns = graph.index[0][edges]
        edge_values = graph.weight[0][edges].detach().clone().requires_grad_()

        def torch_step(c=crow, col=columns, w=edge_values, v=vectors, p=probe, n=n):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = torch.sparse_csr_tensor(c, col, w, (n, n)) @ v[0]
            return torch.autograd.grad((out * p[0]).sum(), w)[0]

        torch.testing.assert_close(ours_step()[0][edges], torch_step(), rtol=1e-4, atol=1e-4)
        ours = median_seconds(ours_step, repeats * 2)
        ref = median_seconds(torch_step, repeats * 2)
        table.add("W X fwd+bwd in weight (ref: torch CSR autograd)", str(n), ours, ref)
    return graphs


def bench_grid(table: Table, shapes: list[tuple[int, int]], repeats: int, rng) -> None:
    sigma_f, sigma_x = SIGMA, 2.0
    for radius in (2, 3):
        for height, width in shapes:
            f_np = rng.standard_normal((CHANNELS, height, width)).astype(np.float32)
            f = torch.from_numpy(f_np).unsqueeze(0)
            graph = grid_graph(f, radius, sigma_f, sigma_x)
            index, weight = reference_grid_graph(f_np, radius, sigma_f, sigma_x)
            assert np.array_equal(graph.index[0].numpy(), index)
            np.testing.assert_allclose(graph.weight[0].numpy(), weight, atol=1e-5)
            ours = median_seconds(lambda f=f, r=radius: grid_graph(f, r, sigma_f, sigma_x), repeats)
            ref = median_seconds(
                lambda f_np=f_np, r=radius: reference_grid_graph(f_np, r, sigma_f, sigma_x),
                repeats,
            )
            size = f"{height * width} ({height}x{width})"
            table.add(f"grid window graph build, r={radius} (ref: numpy shifts)", size, ours, ref)
    # The backward of the build (features receive gradients in training).
    height, width = shapes[-1]
    f = torch.randn(1, CHANNELS, height, width, requires_grad=True)
    probe = torch.rand(1, height * width, 24)

    def build_backward():
        weight = grid_graph(f, 2, sigma_f, sigma_x).weight
        return torch.autograd.grad((weight * probe).sum(), f)[0]

    ours = median_seconds(build_backward, repeats)
    table.add(
        "grid window graph build fwd+bwd, r=2 (no reference)", f"{height * width}", ours, None
    )


def bench_eigh(table: Table, graphs: dict, sizes: list[int], repeats: int, budget: float) -> None:
    try:
        from cheeger.ops.eigh import eigh
    except ImportError as error:  # written by another part of the project
        table.notes.append(f"dense eigh rows skipped: cheeger.ops.eigh not importable ({error})")
        return
    for n in sizes:
        dense = laplacian_to_dense(graphs[n], "symmetric").detach()
        weights = torch.rand(1, n, K_EIG)

        def ours_step(a=dense, r=weights):
            a = a.clone().requires_grad_()
            _, vectors = eigh(a, k=K_EIG, backward="lorentzian")
            return torch.autograd.grad((r * vectors**2).sum(), a)[0]

        def torch_step(a=dense, r=weights):
            a = a.clone().requires_grad_()
            _, vectors = torch.linalg.eigh(a)
            return torch.autograd.grad((r * vectors[..., :K_EIG] ** 2).sum(), a)[0]

        start = time.perf_counter()
        ours_step()
        if time.perf_counter() - start > budget:
            table.add("dense eigh fwd+bwd, k=16 (ref: torch.linalg.eigh)", str(n), None, None)
            continue
        ours = median_seconds(ours_step, repeats)
        ref = median_seconds(torch_step, repeats)
        table.add("dense eigh fwd+bwd, k=16 (ref: torch.linalg.eigh)", str(n), ours, ref)


def _oversubscription_warning(load: float) -> list[str]:
    """A caveat for runs on a busy machine: with more runnable processes than CPUs,
    every parallel torch op waits for its second thread to be scheduled (measured
    here: about 8 ms per op, whatever its size), so multi-threaded rows mostly time
    the scheduler and single-threaded rows are slowed by the load factor."""
    cpus = os.cpu_count() or 1
    if load <= cpus:
        return []
    return [
        f"**Oversubscribed run** (load {load:.1f} > {cpus} CPUs, other jobs on the machine): "
        "with more than one torch thread, each parallel op waits several ms for its "
        "threads to be scheduled, so small and medium rows time the scheduler, not the op.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eigh-budget", type=float, default=20.0, help="skip eigh rows over (s)")
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument(
        "--append", action="store_true", help="add this run's table to --output, keep the rest"
    )
    args = parser.parse_args()
    pin_blas_threads(args.threads)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.quick:
        sizes, shapes, eig_sizes, repeats = [1024, 4096], [(32, 32), (64, 64)], [1024], 2
    else:
        sizes = [1024, 4096, 16384, 32768]
        shapes = [(32, 32), (64, 64), (128, 128), (128, 256)]
        eig_sizes, repeats = [1024, 4096], 5
    repeats = args.repeats or repeats

    table = Table()
    load_before = os.getloadavg()[0]
    print(f"{'op':60s} {'N':>16s} {'cheeger':>10s} {'reference':>10s}")
    graphs = bench_knn_and_products(table, sizes, repeats, rng)
    bench_grid(table, shapes, repeats, rng)
    bench_eigh(table, graphs, eig_sizes, max(1, min(repeats, 3)), args.eigh_budget)
    load_after = os.getloadavg()[0]

    command = "python experiments/bench_ops.py " + " ".join(sys.argv[1:])
    run = [
        f"## torch threads {torch.get_num_threads()}",
        "",
        f"Command: `{command.strip()}` ({datetime.date.today().isoformat()}, seed {args.seed}, "
        f"median of {repeats} timed calls after one warm-up; products: 4x as many, eigh: "
        f"at most 3). BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}. 1-minute load "
        f"average {load_before:.1f} at the start, {load_after:.1f} at the end "
        f"({os.cpu_count()} CPUs).",
        "",
        *_oversubscription_warning(max(load_before, load_after)),
        table.markdown(),
        "",
        "Notes:",
        "",
        *[f"- {note}" for note in table.notes],
        "",
    ]
    header = [
        "# cheeger.ops graph benchmarks",
        "",
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}.",
        "",
        f"Data: float32; kNN rows use 16 Gaussian clusters in C = {CHANNELS} dimensions, "
        f"k = {K_NN}, sigma = {SIGMA}; grid rows use standard normal maps with C = {CHANNELS}, "
        f"sigma_f = {SIGMA}, sigma_x = 2, square window. Matrix products use m = {COLUMNS} "
        "columns on the union kNN graph of the same N. Each reference was checked to give "
        "the same output before timing.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.output.exists():
        args.output.write_text(args.output.read_text() + "\n" + "\n".join(run))
    else:
        args.output.write_text("\n".join(header + run))
    print()
    print("\n".join(header + run))


if __name__ == "__main__":
    main()
