"""Cost and accuracy of the spectral head's backward against its CG tolerance.

The complete backward of ``partial_eigh`` solves one projected linear system per
eigenvector by conjugate gradients, stopped when each column's preconditioned residual
has fallen by ``solver.backward_tol`` (null: the forward ``tol``, 1e-4 in float32). At
full feature-map resolution these solves are most of a training step. This script
measures, for the default spectral head (``head=spectral``, embedding mode, stride 1)
on the Voronoi scenes of ``bench_scale.py``, at each tolerance:

* the backward time (median over ``--repeats`` steps; the forward does not depend on
  the tolerance and is timed once) and the whole step;
* the CG iterations;
* the gradient's error against a tight reference (``backward_tol=1e-7``): relative
  L2 error and cosine, for the features (what reaches the backbone) and for the head's
  parameters;
* the truncated gradient (``solver.out_of_subspace=false``) as the contrast: what
  dropping the term costs in accuracy.

The reference and every tolerance run in the same process on the same inputs; the
speed-up is against the tolerance in use (``null``). Writes
experiments/results/bench_backward_tol.md (``--out`` elsewhere). From the repository root:

    .venv/bin/python experiments/bench_backward_tol.py
    .venv/bin/python experiments/bench_backward_tol.py --quick    # one small size, seconds
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_scale import build, scene
from timing import Table, ms

import cheeger.models.solvers as solvers
from cheeger.models.solvers import PartialSolver

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "bench_backward_tol.md"
SIZES = [(128, 128), (192, 192), (256, 256)]
QUICK_SIZES = [(48, 48)]
TOLERANCES = [None, 1e-3, 3e-3, 1e-2, 3e-2]
REFERENCE = {"backward_tol": 1e-7, "backward_max_iter": 5000}
TRUNCATED = {"out_of_subspace": False}


class Recorder:
    """Keeps the ``PartialEighInfo`` of every ``partial_eigh`` call the solvers make
    (its backward fields are filled when the backward has run)."""

    def __init__(self) -> None:
        self.infos: list = []
        self._solve = solvers.partial_eigh

    def __enter__(self) -> Recorder:
        def solve(*args, **kwargs):
            result = self._solve(*args, **kwargs)
            self.infos.append(result.info)
            return result

        solvers.partial_eigh = solve
        return self

    def __exit__(self, *exc) -> None:
        solvers.partial_eigh = self._solve


def step(head, features, image, labels, recorder: Recorder) -> dict:
    """One forward and backward; the gradients, the times and the CG iterations."""
    head.zero_grad(set_to_none=True)
    recorder.infos.clear()
    x = features.detach().requires_grad_()
    start = time.perf_counter()
    logits, _ = head(x, image)
    loss = F.cross_entropy(logits.float(), labels)
    middle = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    params = torch.cat([p.grad.flatten() for p in head.parameters() if p.grad is not None])
    return {
        "features": x.grad.detach().flatten(),
        "params": params.detach(),
        "forward": middle - start,
        "backward": end - middle,
        "cg": recorder.infos[0].backward_iterations,
    }


def errors(grad: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, cosine) of ``grad`` against ``reference`` (float64)."""
    grad, reference = grad.double(), reference.double()
    relative = float((grad - reference).norm() / reference.norm())
    cosine = float(F.cosine_similarity(grad, reference, dim=0))
    return relative, cosine


def measure(size, repeats: int, recorder: Recorder) -> list[dict]:
    backbone, head, classes = build("spectral", 1)
    head.train()
    features, image, labels = scene(1, size, 1, backbone.out_channels, classes, 0)
    default = head.solver
    if not isinstance(default, PartialSolver):
        raise SystemExit(f"head=spectral uses {type(default).__name__}, not PartialSolver")

    def with_options(options: dict) -> dict:
        head.solver = PartialSolver(default.k, **{**default.options, **options})
        return step(head, features, image, labels, recorder)

    reference = with_options(REFERENCE)
    settings = [(str(tol), {"backward_tol": tol}) for tol in TOLERANCES]
    settings.append(("truncated", TRUNCATED))
    rows = []
    for label, options in settings:
        runs = [with_options(options) for _ in range(repeats)]
        backward = sorted(r["backward"] for r in runs)[len(runs) // 2]
        forward = sorted(r["forward"] for r in runs)[len(runs) // 2]
        last = runs[-1]
        rows.append(
            {
                "label": label,
                "forward": forward,
                "backward": backward,
                "cg": last["cg"],
                "features": errors(last["features"], reference["features"]),
                "params": errors(last["params"], reference["params"]),
            }
        )
    head.solver = default
    return rows


def table(size, rows: list[dict]) -> Table:
    nodes = size[0] * size[1]
    out = Table(
        f"{size[0]}x{size[1]} ({nodes:,} graph nodes)",
        [
            "backward_tol",
            "CG iterations",
            "backward (median)",
            "step (median)",
            "backward speed-up",
            "features: rel. error",
            "features: cosine",
            "params: rel. error",
        ],
    )
    base = rows[0]
    for row in rows:
        label = "null (= tol, 1e-4)" if row["label"] == "None" else row["label"]
        out.add(
            label,
            "-" if row["cg"] is None else row["cg"],
            ms(row["backward"]),
            ms(row["forward"] + row["backward"]),
            f"{base['backward'] / row['backward']:.2f}",
            f"{row['features'][0]:.1e}",
            f"{row['features'][1]:.6f}",
            f"{row['params'][0]:.1e}",
        )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="steps per tolerance")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="one small size, one repeat")
    parser.add_argument("--out", type=Path, default=OUT, help="markdown file written")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, found {args.repeats}")
    if args.quick:
        args.repeats = 1
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = QUICK_SIZES if args.quick else SIZES
    tables = []
    with Recorder() as recorder:
        for size in sizes:
            tables.append(table(size, measure(size, args.repeats, recorder)))
    command = " ".join(["python experiments/bench_backward_tol.py", *sys.argv[1:]]).strip()
    lines = [
        "# Backward CG tolerance: cost against gradient accuracy",
        "",
        f"{datetime.date.today()}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}. "
        f"Command: `{command}`. Load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "Default spectral head (`head=spectral`: embedding mode, stride 1, 3x3 bilateral "
        "window graph, L_sym, partial_eigh k = 16, float32), batch 1, one training step "
        "(head forward, cross-entropy, backward). Errors are against `backward_tol=1e-7` "
        "(`backward_max_iter=5000`) on the same inputs; `truncated` drops the "
        "out-of-subspace term (`solver.out_of_subspace=false`). Speed-up: backward time "
        f"of `null` over that row's; medians of {args.repeats} step(s).",
        "",
        *[t.markdown() for t in tables],
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
