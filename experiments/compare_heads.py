"""Train ConvHead and SpectralHead variants on the same backbone and compare them.

Each variant is a list of Hydra overrides on top of the shared ones; every variant is
trained with the same data, backbone, epochs and seed(s) through ``cheeger.train.train``
(the code path of ``python -m cheeger.train``), and the script records

* val mIoU, Boundary IoU, BF score (best checkpoint, as logged by the run),
* time per training step: ``train/step_time`` of the last epoch (the median over its
  batches of forward, loss, backward and optimizer step, ``cheeger.callbacks.StepTimer``)
  and its ratio to the first variant (conv),
* peak resident memory of the process after the run (ru_maxrss, monotone: a lower bound
  for later variants, so variants run from cheapest to most expensive).

and writes a markdown table to ``experiments/results/<name>.md``. Run from the
repository root, e.g.:

    .venv/bin/python experiments/compare_heads.py                       # default protocol
    .venv/bin/python experiments/compare_heads.py --epochs 1 --limit-train-batches 8
    .venv/bin/python experiments/compare_heads.py --seeds 0 1 2 --variant conv \\
        --variant spectral head=spectral --name compare_heads_3seeds

(The same command with ``--override dataset=cityscapes trainer=gpu`` runs on a GPU.)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cheeger.train import train  # noqa: E402
from tests.conftest import compose  # noqa: E402  (shared composition helper)

DEFAULT_VARIANTS = {
    "conv": [],
    "spectral (lanczos, temper)": ["head=spectral"],
    "spectral (chebyshev, learned)": ["head=spectral", "solver=chebyshev", "response=learned"],
}


def run_variant(overrides: list[str], out_dir: Path) -> dict[str, float]:
    start = time.perf_counter()
    _, metrics = train(compose("train", overrides, out_dir))
    return {
        "mIoU": metrics.get("val/mIoU", float("nan")),
        "boundary_iou": metrics.get("val/boundary_iou", float("nan")),
        "bf": metrics.get("val/bf", float("nan")),
        # median of the last epoch's steps (cheeger.callbacks.StepTimer)
        "step_time": metrics.get("train/step_time", float("nan")),
        "wall": time.perf_counter() - start,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def write_table(args, shared, rows, load_start, started) -> None:
    """(Re)write the markdown table with the rows finished so far."""
    base_step = rows[0][4]
    lines = [
        f"# {args.name}",
        "",
        f"{datetime.date.today()}, {platform.platform()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads. Command: `python "
        f"experiments/compare_heads.py {' '.join(sys.argv[1:])}`. Load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; total "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
        "",
        f"Shared overrides: `{' '.join(shared)}`. Time per step: `train/step_time` of the last "
        "epoch, the median over its training batches of forward + loss + backward + optimizer "
        "step (cheeger.callbacks.StepTimer); ratio to the first row. Wall: the whole run.",
        "",
        "| variant | overrides | seed | val mIoU | val Boundary IoU | val BF | s / step | "
        "ratio | wall (min) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, overrides, seed, result, step in rows:
        lines.append(
            f"| {name} | `{' '.join(overrides) or '(defaults)'}` | {seed} | {result['mIoU']:.3f} | "
            f"{result['boundary_iou']:.3f} | {result['bf']:.3f} | {step:.3f} | "
            f"{step / base_step:.2f} | {result['wall'] / 60:.1f} | {result['peak_rss_gb']:.2f} |"
        )
    path = ROOT / "experiments" / "results" / f"{args.name}.md"
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train-batches", type=float, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="a variant: its name then its overrides (repeatable; default: conv and two spectral)",
    )
    parser.add_argument("--override", nargs="*", default=[], help="overrides for all variants")
    parser.add_argument("--name", default="compare_heads")
    args = parser.parse_args()
    variants = {v[0]: v[1:] for v in args.variant} if args.variant else dict(DEFAULT_VARIANTS)
    shared = [
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "callbacks.panel=null",
        "test=false",
        *args.override,
    ]
    if args.limit_train_batches is not None:
        limit = args.limit_train_batches
        shared.append(f"trainer.limit_train_batches={int(limit) if limit >= 1 else limit}")
    out_root = ROOT / "outputs" / "experiments" / args.name
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    for name, overrides in variants.items():
        for seed in args.seeds:
            out_dir = out_root / f"{name.split()[0]}-{len(rows)}-seed{seed}"
            result = run_variant([*shared, *overrides, f"seed={seed}"], out_dir)
            step = result["step_time"]
            rows.append((name, overrides, seed, result, step))
            write_table(args, shared, rows, load_start, started)
            print(
                f"{name} seed={seed}: val mIoU {result['mIoU']:.3f}, boundary IoU "
                f"{result['boundary_iou']:.3f}, {step:.3f} s/step",
                flush=True,
            )
    print(f"wrote {ROOT / 'experiments' / 'results' / f'{args.name}.md'}")


if __name__ == "__main__":
    main()
