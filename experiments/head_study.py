"""The head study: ConvHead against SpectralHead variants, same backbone, data and seeds.

Reads a study file (default ``experiments/head_study.yaml``: seeds, baseline, shared
overrides, variants), trains every (variant, seed) with ``python -m cheeger.train`` in its
own process (so that peak memory is the run's own) and directory
``outputs/experiments/<name>/<variant>/seed<k>``.

A variant is a list of training overrides, or ``{eval_of: <variant>, overrides: [...]}``:
no training, ``python -m cheeger.eval`` of that (earlier) variant's best-val checkpoint
on the test split with the given eval overrides (and the study's ``eval_shared``), e.g.
a fixed post-processing control; its step time and memory are its source's.

It writes
``experiments/results/<name>.md`` with

* test mIoU, Boundary IoU, BF and the trimap curve (IoU in bands of growing width around
  the true boundaries) of the best-val checkpoint, mean +- std over seeds,
* time per training step (``train/step_time``: median over the last epoch's batches) and
  its ratio to the baseline, peak memory (``train/peak_memory_mb``), wall time per run,
* a paired comparison of every variant with the baseline over seeds: the per-seed
  differences, their mean +- std and the two-sided paired t-test p-value,

plus the figures and the page of ``cheeger.compare`` (one plotting path for both):
``experiments/results/<name>_trimap.png`` (the trimap curves), ``<name>_curves.png``,
``<name>_test_scores.png``, ``<name>_miou_vs_boundary_iou.png``, ``<name>_class_iou.png``,
``<name>_comparison.html`` and ``<name>_comparison.md``. The table is rewritten
after every run, and finished runs are not trained again: a stopped study resumes where it
stopped (``--fresh`` retrains everything). Examples, from the repository root:

    .venv/bin/python experiments/head_study.py                        # the committed study
    .venv/bin/python experiments/head_study.py --seeds 0 --variants conv spectral_lanczos_temper
    .venv/bin/python experiments/head_study.py --name head_study_cityscapes \\
        --override dataset=cityscapes dataset.root=/data/cityscapes trainer=gpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from cheeger import compare
from cheeger.compare import mean_pm_std, paired
from cheeger.run.keys import SCORE_TITLES as SCORE_NAMES
from cheeger.run.keys import SCORES
from cheeger.run.runner import FINAL_METRICS_FILE, load_final_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


@dataclass
class Run:
    """The figures of one finished (variant, seed) training run."""

    variant: str
    seed: int
    scores: dict[str, float]  # test mIoU, boundary_iou, bf
    trimap: dict[int, float]  # band width (px) -> test IoU in that band
    step_time: float  # s, median over the last epoch's training batches
    peak_memory_mb: float
    wall_s: float
    val_miou: float  # of the last epoch


def load_study(path: Path) -> dict:
    """The study file, checked: name, seeds, baseline, shared, variants."""
    study = yaml.safe_load(path.read_text())
    for key, kind in (
        ("name", str),
        ("seeds", list),
        ("baseline", str),
        ("shared", list),
        ("variants", dict),
    ):
        if not isinstance(study.get(key), kind):
            raise ValueError(f"{path}: `{key}` must be a {kind.__name__}, found {study.get(key)!r}")
    if study["baseline"] not in study["variants"]:
        raise ValueError(
            f"{path}: baseline {study['baseline']!r} is not among the variants "
            f"{sorted(study['variants'])}"
        )
    seen: list[str] = []
    for name, spec in study["variants"].items():
        if isinstance(spec, dict):
            if set(spec) != {"eval_of", "overrides"} or spec["eval_of"] not in seen:
                raise ValueError(
                    f"{path}: variant {name!r} must be a list of overrides or "
                    f"{{eval_of: <an earlier variant>, overrides: [...]}}, found {spec!r}"
                )
        elif not isinstance(spec, list):
            raise ValueError(f"{path}: variant {name!r} must be a list, found {spec!r}")
        seen.append(name)
    study.setdefault("eval_shared", [])
    return study


def best_checkpoint(run_dir: Path) -> Path:
    """The best-val checkpoint ModelCheckpoint kept in ``run_dir/checkpoints``."""
    found = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{run_dir / 'checkpoints'}: expected one best checkpoint epoch*.ckpt, found "
            f"{[f.name for f in found]}"
        )
    return found[0]


def read_run(
    variant: str, seed: int, run_dir: Path, wall_s: float, training_dir: Path | None = None
) -> Run:
    """A Run from a finished run directory (the final_metrics.json cheeger.train or
    cheeger.eval writes); step time and memory from ``training_dir`` when given (an
    evaluation-only variant's source)."""

    def load(directory: Path) -> dict[str, float]:
        return {
            key: math.nan if value is None else value
            for key, value in load_final_metrics(directory).items()
        }

    metrics = load(run_dir)
    if training_dir is not None:
        training = load(training_dir)
        for key in ("train/step_time", "train/peak_memory_mb", "val/mIoU"):
            metrics[key] = training.get(key, math.nan)
    missing = [f"test/{s}" for s in SCORES if f"test/{s}" not in metrics]
    if missing:
        raise KeyError(
            f"{run_dir / FINAL_METRICS_FILE} has no {missing}: was the run made with test=true?"
        )
    trimap = {
        int(key.split("@")[1]): value
        for key, value in metrics.items()
        if key.startswith("test/trimap_iou@")
    }
    return Run(
        variant=variant,
        seed=seed,
        scores={s: metrics[f"test/{s}"] for s in SCORES},
        trimap=dict(sorted(trimap.items())),
        step_time=metrics.get("train/step_time", math.nan),
        peak_memory_mb=metrics.get("train/peak_memory_mb", math.nan),
        wall_s=wall_s,
        val_miou=metrics.get("val/mIoU", math.nan),
    )


def report(study: dict, runs: list[Run], header: str) -> str:
    """The markdown report of the finished runs."""
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
    base_runs = by_variant.get(study["baseline"], [])
    base_step = float(np.median([r.step_time for r in base_runs])) if base_runs else math.nan
    lines = [header, "", "## Scores (test split, best-val checkpoint; mean ± std over seeds)", ""]
    lines += [
        "| variant | seeds | mIoU | Boundary IoU | BF | s / step | ratio to "
        f"{study['baseline']} | peak memory (MB) | wall per run (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, group in by_variant.items():
        steps = [r.step_time for r in group]
        lines.append(
            f"| {name} | {len(group)} | {mean_pm_std([r.scores['mIoU'] for r in group], 3)} | "
            f"{mean_pm_std([r.scores['boundary_iou'] for r in group], 3)} | "
            f"{mean_pm_std([r.scores['bf'] for r in group], 3)} | {mean_pm_std(steps, 2)} | "
            f"{float(np.median(steps)) / base_step:.2f} | "
            f"{max(r.peak_memory_mb for r in group):.0f} | "
            f"{np.mean([r.wall_s for r in group]) / 60:.1f} |"
        )
    lines += ["", f"## Paired over seeds: variant - {study['baseline']}", ""]
    lines += [
        "| variant | score | per-seed differences | mean ± std | paired t-test p |",
        "|---|---|---|---|---|",
    ]
    base_by_seed = {s: {r.seed: r.scores[s] for r in base_runs} for s in SCORES}
    for name, group in by_variant.items():
        if name == study["baseline"]:
            continue
        for score in SCORES:
            result = paired(base_by_seed[score], {r.seed: r.scores[score] for r in group})
            diffs = ", ".join(f"{d:+.3f}" for d in result["diffs"]) or "(no common seed)"
            spread = "" if math.isnan(result["std"]) else f" ± {result['std']:.3f}"
            p_text = "n/a" if math.isnan(result["p"]) else f"{result['p']:.3f}"
            lines.append(
                f"| {name} | {SCORE_NAMES[score]} | {diffs} | "
                f"{result['mean']:+.3f}{spread} | {p_text} |"
            )
    widths = sorted({w for r in runs for w in r.trimap})
    if widths:
        lines += ["", "## Trimap curve: test IoU within w pixels of a true boundary", ""]
        lines += [
            "| variant | " + " | ".join(f"w = {w}" for w in widths) + " |",
            "|---|" + "---|" * len(widths),
        ]
        for name, group in by_variant.items():
            cells = [mean_pm_std([r.trimap.get(w, math.nan) for r in group], 3) for w in widths]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Runs",
        "",
        "| variant | seed | val mIoU | test mIoU | test Boundary IoU | "
        "test BF | s / step | peak memory (MB) | wall (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.variant} | {r.seed} | {r.val_miou:.3f} | "
            f"{r.scores['mIoU']:.3f} | {r.scores['boundary_iou']:.3f} | {r.scores['bf']:.3f} | "
            f"{r.step_time:.3f} | {r.peak_memory_mb:.0f} | {r.wall_s / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def compared_run(
    variant: str, seed: int, run_dir: Path, training_dir: Path | None
) -> compare.RunData:
    """A finished run as ``cheeger.compare`` draws it, under the study's variant name; an
    evaluation-only variant shows its source's learning curves."""
    run = compare.load_run(run_dir)
    if training_dir is not None:
        run.curves = compare.load_run(training_dir).curves
    run.variant, run.seed = variant, seed
    return run


def train_run(overrides: list[str], run_dir: Path, task: str = "train") -> float:
    """Run ``python -m cheeger.<task>`` in a child process; returns its wall time (s).
    Raises with the log's tail when it fails."""
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"cheeger.{task}", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    with (run_dir / "study.log").open("w") as log:
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = (run_dir / "study.log").read_text().splitlines()[-20:]
        raise RuntimeError(f"run failed (exit {code}): {' '.join(command)}\n" + "\n".join(tail))
    return time.perf_counter() - start


def describe(spec: list[str] | dict) -> str:
    """A variant's overrides as the report's header states them."""
    if isinstance(spec, dict):
        overrides = " ".join(spec["overrides"])
        return f"`cheeger.eval` of {spec['eval_of']}'s best checkpoint with `{overrides}`"
    return f"`{' '.join(spec) or '(defaults)'}`"


def main(argv: list[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "head_study.yaml")
    parser.add_argument("--name", help="output name (default: the study file's `name`)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the study file's seeds")
    parser.add_argument("--variants", nargs="+", help="a subset of the study's variants")
    parser.add_argument("--override", nargs="*", default=[], help="overrides for every run")
    parser.add_argument("--out-root", type=Path, default=ROOT / "outputs" / "experiments")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="retrain finished runs too")
    args = parser.parse_args(argv)
    study = load_study(args.config)
    name = args.name or study["name"]
    seeds = args.seeds or study["seeds"]
    variants = study["variants"]
    if args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            raise SystemExit(
                f"--variants: {unknown} not in {args.config} (have {sorted(variants)})"
            )
        variants = {v: variants[v] for v in args.variants}
    shared = [*study["shared"], *args.override]
    args.results.mkdir(parents=True, exist_ok=True)
    table = args.results / f"{name}.md"
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    config = args.config.resolve()
    shown_config = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
    runs: list[Run] = []
    compared: dict[str, list[compare.RunData]] = {}
    jobs = [(v, s) for v in variants for s in seeds]
    for variant, seed in tqdm(jobs, desc=name, unit="run"):
        run_dir = args.out_root / name / variant / f"seed{seed}"
        done = run_dir / "study.json"
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        spec = variants[variant]
        source = None
        if isinstance(spec, dict):
            source = args.out_root / name / spec["eval_of"] / f"seed{seed}"
        if done.is_file():
            wall = json.loads(done.read_text())["wall_s"]
        elif source is None:
            wall = train_run([*shared, *spec, f"seed={seed}"], run_dir)
            done.write_text(json.dumps({"wall_s": wall}))
        else:
            overrides = [f"ckpt_path={best_checkpoint(source)}", "split=test", f"seed={seed}"]
            overrides += [*study["eval_shared"], *spec["overrides"]]
            wall = train_run(overrides, run_dir, task="eval")
            done.write_text(json.dumps({"wall_s": wall}))
        runs.append(read_run(variant, seed, run_dir, wall, source))
        compared.setdefault(variant, []).append(compared_run(variant, seed, run_dir, source))
        header = (
            f"# {name}\n\n{datetime.date.today()}, {platform.platform()}, {os.cpu_count()} CPUs. "
            f"Command: `python experiments/head_study.py {' '.join(argv or sys.argv[1:])}` "
            f"(study file `{shown_config}`). "
            f"Load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} now; "
            f"{(time.perf_counter() - started) / 60:.1f} min of this invocation.\n\n"
            f"Shared overrides: `{' '.join(shared)}`. Variants: "
            + "; ".join(f"{v} = {describe(o)}" for v, o in variants.items())
            + "."
        )
        table.write_text(report({**study, "variants": variants}, runs, header))
        baseline = study["baseline"] if study["baseline"] in compared else None
        compare.write_comparison(compared, args.results, baseline, name, prefix=f"{name}_")
    print(table.read_text())
    return runs


if __name__ == "__main__":
    main()
