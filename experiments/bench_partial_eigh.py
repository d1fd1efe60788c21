"""Timings of ``cheeger.ops.partial_eigh`` against scipy eigsh, torch.lobpcg and dense eigh.

The problem: the k = 16 smallest eigenpairs of the symmetric normalised Laplacian
L = I - D^-1/2 W D^-1/2, float32, of

* kNN graphs (k = 16, Gaussian weights with sigma = 8, union, degree cap 32 as in
  bench_ops.py) over C = 64 features, "random" (standard normal) or "clustered"
  (16 Gaussian clusters, the shape of a trained network's features);
* the bilateral window graph (``grid_graph``, radius 2, sigma_feature = 8,
  sigma_spatial = 2) of a 128 x 256 feature map made of 16 Voronoi regions with
  per-region mean features plus unit noise ("regions"), and of pure noise ("noise").

Rows, medians over repeats after one warm-up call:

* forward: cheeger (no autograd) vs scipy ``eigsh(which="SA")`` (ARPACK, float32 CSR,
  default tolerance = machine precision) vs ``torch.lobpcg`` (float32 CSR input,
  largest=False, default tolerance). Every method's result is checked the same way:
  the largest relative residual ||L u - λ u|| / 2 in float64 and the largest
  eigenvalue difference to eigsh.
* backward: a loss Σ λ + Σ R ∘ U² (R fixed random), time of ``loss.backward()`` alone
  as a multiple of the forward with autograd recording, and the conjugate-gradient
  iterations of the out-of-subspace solve.
* warm start: the graph's weights times (1 + 0.01 (z_i + z_l)/2) (noise symmetric in
  the endpoints), solved cold and from the unperturbed solution's block.
* fwd+bwd at N = 4,096 against dense ``torch.linalg.eigh`` on the dense Laplacian.
* the headline: features (requiring grad) -> ``grid_graph`` -> ``partial_eigh`` ->
  loss -> backward to the features, 128 x 256 map.

Writes experiments/results/bench_partial_eigh.md. Run from the repository root:

    .venv/bin/python experiments/bench_partial_eigh.py            # 2 threads, all sizes
    .venv/bin/python experiments/bench_partial_eigh.py --quick    # N <= 16,384, fewer repeats
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse.linalg
import torch
from timing import Table, ms, pin_blas_threads, synchronize, timed

from cheeger.ops.graph import NeighborGraph
from cheeger.ops.grid import grid_graph
from cheeger.ops.knn import knn_graph
from cheeger.ops.laplacian import laplacian_to_dense, laplacian_to_scipy
from cheeger.ops.partial_eigh import partial_eigh

CHANNELS, K_NN, K_EIG, CAP, SIGMA = 64, 16, 16, 32, 8.0
GRID = (128, 256)
OUT = Path(__file__).resolve().parent / "results" / "bench_partial_eigh.md"


# --------------------------------------------------------------------------- graphs


def knn_features(n: int, kind: str, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, CHANNELS))
    else:
        centres = rng.standard_normal((16, CHANNELS)) * 2.0
        x = centres[rng.integers(0, 16, n)] + rng.standard_normal((n, CHANNELS))
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)


def map_features(kind: str, seed: int, grid: tuple[int, int] = GRID) -> torch.Tensor:
    """(1, C, *grid): 16 Voronoi regions (mean per region + unit noise) or pure noise."""
    rng = np.random.default_rng(seed)
    height, width = grid
    if kind == "noise":
        f = rng.standard_normal((height, width, CHANNELS))
    else:
        sites = rng.uniform((0, 0), (height, width), (16, 2))
        yy, xx = np.mgrid[0:height, 0:width]
        label = ((yy[..., None] - sites[:, 0]) ** 2 + (xx[..., None] - sites[:, 1]) ** 2).argmin(-1)
        centres = rng.standard_normal((16, CHANNELS)) * 2.0
        f = centres[label] + rng.standard_normal((height, width, CHANNELS))
    return torch.from_numpy(f.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def build_grid(features: torch.Tensor) -> NeighborGraph:
    return grid_graph(features, 2, SIGMA, 2.0)


def perturbed(graph: NeighborGraph, seed: int) -> NeighborGraph:
    g = torch.Generator().manual_seed(seed)
    batch, n, slots = graph.index.shape
    z = torch.randn(batch, n, generator=g)
    neighbour = z.gather(1, graph.index.reshape(batch, -1)).view(batch, n, slots)
    return NeighborGraph(graph.index, graph.weight * (1.0 + 0.005 * (z.unsqueeze(-1) + neighbour)))


# --------------------------------------------------------------------------- solvers


def residual_of(matrix64, values: np.ndarray, vectors: np.ndarray) -> float:
    """Largest ||L v - λ v|| / 2 over the pairs (vectors normalised), float64."""
    vectors = vectors.astype(np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    return float(np.linalg.norm(matrix64 @ vectors - vectors * values, axis=0).max() / 2.0)


def eigsh_solve(matrix32):
    values, vectors = scipy.sparse.linalg.eigsh(matrix32, K_EIG, which="SA")
    order = np.argsort(values)
    return values[order], vectors[:, order]


def torch_csr(matrix32) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix32.indptr.astype(np.int64)),
            torch.from_numpy(matrix32.indices.astype(np.int64)),
            torch.from_numpy(matrix32.data),
            matrix32.shape,
        )


def lobpcg_solve(csr: torch.Tensor, seed: int):
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(csr.shape[0], K_EIG, generator=g)
    values, vectors = torch.lobpcg(csr, k=K_EIG, X=start, largest=False)
    return values.numpy(), vectors.numpy()


def loss_of(values: torch.Tensor, vectors: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    return values.sum() + (probe * vectors.square()).sum()


# --------------------------------------------------------------------------- table


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}"


# --------------------------------------------------------------------------- sections


def on_device(graph: NeighborGraph, device: str) -> NeighborGraph:
    return NeighborGraph(graph.index.to(device), graph.weight.to(device))


def bench_problem(
    name: str,
    size: str,
    host_graph: NeighborGraph,
    repeats: int,
    lobpcg_budget: float,
    tables,
    device: str = "cpu",
) -> None:
    """cheeger on ``device``; scipy and lobpcg on the host's CPU."""
    forward, backward, warm = tables
    matrix64 = laplacian_to_scipy(host_graph)[0]
    matrix32 = matrix64.astype(np.float32)
    n = host_graph.num_nodes
    graph = on_device(host_graph, device)

    with torch.no_grad():
        ours_t, ours = timed(lambda: partial_eigh(graph, K_EIG), repeats, device=device)
    ours_values = ours.eigenvalues[0].double().cpu().numpy()
    ours_res = residual_of(matrix64, ours_values, ours.eigenvectors[0].cpu().numpy())
    eigsh_t, (eigsh_values, eigsh_vectors) = timed(lambda: eigsh_solve(matrix32), repeats)
    eigsh_res = residual_of(matrix64, eigsh_values, eigsh_vectors)

    csr = torch_csr(matrix32)
    start = time.perf_counter()
    lob_values, lob_vectors = lobpcg_solve(csr, 0)
    first = time.perf_counter() - start
    lob_repeats = repeats if first * repeats < lobpcg_budget else 1
    lob_t, (lob_values, lob_vectors) = timed(lambda: lobpcg_solve(csr, 0), lob_repeats)
    lob_res = residual_of(matrix64, lob_values, lob_vectors)
    forward.add(
        name,
        size,
        f"{ms(ours_t)} ({ours.info.iterations} it, {ours.info.matvecs} mv)",
        ms(eigsh_t),
        ms(lob_t),
        ratio(ours_t, eigsh_t),
        ratio(ours_t, lob_t),
        f"{ours_res:.1e} / {eigsh_res:.1e} / {lob_res:.1e}",
        f"{np.abs(ours_values - eigsh_values).max():.1e} / "
        f"{np.abs(lob_values - eigsh_values).max():.1e}",
    )

    probe = torch.rand(1, n, K_EIG, generator=torch.Generator().manual_seed(1)).to(device)

    def forward_backward(out_of_subspace: bool = True):
        weight = graph.weight.detach().clone().requires_grad_(True)
        synchronize(device)
        begin = time.perf_counter()
        result = partial_eigh(
            NeighborGraph(graph.index, weight), K_EIG, out_of_subspace=out_of_subspace
        )
        synchronize(device)
        middle = time.perf_counter()
        loss_of(result.eigenvalues, result.eigenvectors, probe).backward()
        synchronize(device)
        end = time.perf_counter()
        return middle - begin, end - middle, result.info

    runs = [forward_backward() for _ in range(repeats + 1)][1:]
    fwd = statistics.median(r[0] for r in runs)
    bwd = statistics.median(r[1] for r in runs)
    info = runs[-1][2]
    truncated = [forward_backward(False) for _ in range(repeats + 1)][1:]
    bwd_truncated = statistics.median(r[1] for r in truncated)
    backward.add(
        name,
        size,
        ms(fwd),
        ms(bwd),
        ratio(bwd, fwd),
        str(info.backward_iterations),
        f"{info.backward_residual:.1e}",
        ms(bwd_truncated),
    )

    moved = on_device(perturbed(host_graph, 2), device)
    with torch.no_grad():
        cold_t, cold = timed(lambda: partial_eigh(moved, K_EIG), repeats, device=device)
        warm_t, hot = timed(
            lambda: partial_eigh(moved, K_EIG, X0=ours.info.block), repeats, device=device
        )
    warm.add(
        name,
        size,
        f"{ms(cold_t)} ({cold.info.iterations} it)",
        f"{ms(warm_t)} ({hot.info.iterations} it)",
        ratio(cold_t, warm_t),
    )


def bench_dense(n: int, repeats: int, table: Table, device: str = "cpu") -> None:
    graph = knn_graph(knn_features(n, "random", 0), K_NN, sigma=SIGMA, max_degree=CAP)
    graph = on_device(graph, device)
    probe = torch.rand(1, n, K_EIG, generator=torch.Generator().manual_seed(1)).to(device)

    def ours(backward: str = "lorentzian"):
        weight = graph.weight.detach().clone().requires_grad_(True)
        result = partial_eigh(NeighborGraph(graph.index, weight), K_EIG, backward=backward)
        loss_of(result.eigenvalues, result.eigenvectors, probe).backward()
        return weight.grad

    def dense():
        weight = graph.weight.detach().clone().requires_grad_(True)
        values, vectors = torch.linalg.eigh(laplacian_to_dense(NeighborGraph(graph.index, weight)))
        loss_of(values[..., :K_EIG], vectors[..., :K_EIG], probe).backward()
        return weight.grad

    ours_t, ours_grad = timed(ours, repeats, device=device)
    dense_t, dense_grad = timed(dense, max(1, repeats // 2), device=device)
    exact_grad = ours("exact")

    def difference(grad: torch.Tensor) -> str:
        return f"{float((grad - dense_grad).norm() / dense_grad.norm()):.1e}"

    table.add(
        f"kNN random, N = {n:,}",
        ms(ours_t),
        ms(dense_t),
        f"{dense_t / ours_t:.0f}x",
        f"{difference(exact_grad)} / {difference(ours_grad)}",
    )


def bench_headline(repeats: int, table: Table, device: str = "cpu", grid=GRID) -> None:
    for kind in ("regions", "noise"):
        features = map_features(kind, 0, grid).to(device)
        probe = torch.rand(1, grid[0] * grid[1], K_EIG, generator=torch.Generator().manual_seed(1))
        probe = probe.to(device)

        def step(warm_block=None, features=features, probe=probe):
            f = features.clone().requires_grad_(True)
            synchronize(device)
            begin = time.perf_counter()
            graph = build_grid(f)
            synchronize(device)
            built = time.perf_counter()
            result = partial_eigh(graph, K_EIG, X0=warm_block)
            synchronize(device)
            solved = time.perf_counter()
            loss_of(result.eigenvalues, result.eigenvectors, probe).backward()
            synchronize(device)
            end = time.perf_counter()
            return (built - begin, solved - built, end - solved, end - begin), result.info

        runs = [step() for _ in range(repeats + 1)][1:]
        parts = [statistics.median(r[0][i] for r in runs) for i in range(4)]
        info = runs[-1][1]
        # Warm start as in training: the previous step's block, features moved by 1%.
        noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(3))
        shifted = features * (1.0 + 0.01 * noise.to(device))

        def warm_step(features=shifted, probe=probe, block=info.block):
            f = features.clone().requires_grad_(True)
            synchronize(device)
            begin = time.perf_counter()
            result = partial_eigh(build_grid(f), K_EIG, X0=block)
            loss_of(result.eigenvalues, result.eigenvectors, probe).backward()
            synchronize(device)
            return time.perf_counter() - begin, result.info

        warm_runs = [warm_step() for _ in range(repeats + 1)][1:]
        warm_total = statistics.median(r[0] for r in warm_runs)
        table.add(
            f"grid {grid[0]}x{grid[1]}, {kind}",
            ms(parts[0]),
            f"{ms(parts[1])} ({info.iterations} it)",
            f"{ms(parts[2])} ({info.backward_iterations} CG it)",
            f"**{ms(parts[3])}**",
            f"{ms(warm_total)} ({warm_runs[-1][1].iterations} it)",
        )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N <= 16,384, fewer repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--device", default="cpu", help="where cheeger runs: cpu | cuda | mps")
    parser.add_argument("--dense-n", type=int, default=4096, help="N of the dense eigh row")
    parser.add_argument(
        "--grid", type=int, nargs=2, default=list(GRID), help="height width of the grid rows"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.device not in ("cpu", "cuda", "mps"):
        parser.error(f"--device must be cpu, cuda or mps, found {args.device!r}")
    pin_blas_threads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([4096, 16384] if args.quick else [4096, 16384, 32768, 65536])
    repeats = args.repeats or (2 if args.quick else 3)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    forward = Table(
        "Forward, k = 16 smallest of L_sym, float32",
        [
            "graph",
            "N",
            "cheeger partial_eigh",
            "scipy eigsh",
            "torch.lobpcg (CSR)",
            "cheeger / eigsh",
            "cheeger / lobpcg",
            "max residual (cheeger / eigsh / lobpcg)",
            "max abs λ difference to eigsh (cheeger / lobpcg)",
        ],
    )
    backward = Table(
        "Backward (loss Σλ + Σ R∘U²), float32",
        [
            "graph",
            "N",
            "forward (autograd on)",
            "backward",
            "backward / forward",
            "CG iterations",
            "CG residual",
            "backward, out_of_subspace=False",
        ],
    )
    warm = Table(
        "Warm start (weights x (1 + 1% symmetric noise), X0 = previous block)",
        ["graph", "N", "cold", "warm", "cold / warm"],
    )
    tables = (forward, backward, warm)
    for n in sizes:
        for kind in ("random", "clustered"):
            build = time.perf_counter()
            graph = knn_graph(knn_features(n, kind, 0), K_NN, sigma=SIGMA, max_degree=CAP)
            print(f"kNN {kind} N={n}: built in {time.perf_counter() - build:.1f} s", flush=True)
            bench_problem(f"kNN {kind}", f"{n:,}", graph, repeats, 60.0, tables, args.device)
    grid = tuple(args.grid)
    for kind in ("regions", "noise"):
        graph = build_grid(map_features(kind, 0, grid))
        bench_problem(
            f"grid {kind}",
            f"{graph.num_nodes:,} ({grid[0]}x{grid[1]})",
            graph,
            repeats,
            60.0,
            tables,
            args.device,
        )

    dense = Table(
        "fwd+bwd against dense torch.linalg.eigh",
        [
            "graph",
            "cheeger fwd+bwd",
            "dense eigh fwd+bwd",
            "speed-up",
            "grad rel. difference (cheeger backward=exact / lorentzian default)",
        ],
    )
    bench_dense(args.dense_n, repeats, dense, args.device)
    headline = Table(
        f"Headline: features -> grid_graph -> partial_eigh -> loss -> backward, "
        f"{grid[0]}x{grid[1]}",
        ["map", "graph build", "eigensolver fwd", "backward", "total", "total, warm-started"],
    )
    bench_headline(repeats, headline, args.device, grid)

    load_after = os.getloadavg()[0]
    command = " ".join(["python", *sys.argv])
    header = [
        "# partial_eigh benchmark",
        "",
        f"{datetime.date.today()}, {platform.platform()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs, cheeger on {args.device}; torch {torch.__version__}, "
        f"scipy {scipy.__version__}, "
        f"numpy {np.__version__}; {args.threads} torch/BLAS threads. Command: `{command}`. "
        f"Medians of {repeats} after a warm-up. Load average {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end (other jobs shared the machine); total "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        "cheeger: Chebyshev-filtered subspace iteration, block k + 12, filter degree <= 16 "
        "(predicted per iteration), default "
        "tol 1e-4 (relative residual ||L u - λ u|| / 2). eigsh: ARPACK, default tol "
        "(machine precision). torch.lobpcg: default tol. Residual column: largest "
        "||L u - λ u|| / 2 of the 16 pairs, recomputed in float64 for every method.",
        "",
    ]
    body = "\n".join(t.markdown() for t in (forward, backward, warm, dense, headline))
    text = "\n".join(header) + "\n" + body
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
