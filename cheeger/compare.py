"""Compare runs offline: ``python -m cheeger.compare RUN_OR_SWEEP_DIR [...] [--out DIR]``.

Reads run directories (``python -m cheeger.train`` or ``cheeger.eval``) and multirun sweep
directories (every run directory below them): ``final_metrics.json``, the learning curves
from ``metrics.csv`` (or, without it, from the offline W&B run beside it), the resolved
config and the Hydra overrides. Runs whose overrides are the same apart from ``seed`` are
one variant. It writes, into ``--out``:

* ``comparison.html``: one self-contained page (figures embedded, no server, no CDN);
* ``comparison.md``: the tables: per variant the test scores (mean ± std over seeds) and
  the paired differences against the baseline (default: the conv head) with the paired
  t-test, then one row per run, with the numbers of its ``final_metrics.json``;
* the figures as PNGs: learning curves of val mIoU and Boundary IoU (mean and min/max band
  over seeds), test scores with seed error bars, test mIoU against Boundary IoU, the trimap
  curve, and a per-class IoU heatmap (variants x classes).

A directory without ``final_metrics.json`` (a failed or unfinished run) or with a file that
cannot be read is named in a warning and left out. This is a plain command-line tool, not a
Hydra app: it takes paths, composes no config, and should not make a run directory of its own.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from cheeger.run import keys
from cheeger.run.report import _pyplot, _save
from cheeger.run.runner import FINAL_METRICS_FILE, load_final_metrics
from cheeger.run.wandb_offline import offline_runs, read_offline_run

CURVES = (keys.metric("val", keys.MIOU), keys.metric("val", keys.BOUNDARY_IOU))
TEST_SCORES = tuple(keys.metric("test", score) for score in keys.SCORES)
# A run directory holds its final metrics, or (a failed run) the .hydra folder of its start.
RUN_MARKERS = (FINAL_METRICS_FILE, ".hydra")


class RunDirError(ValueError):
    """A run directory that cannot be read (its message names the file)."""


@dataclass
class RunData:
    """What one run left in its directory.

    Attributes:
        directory: the run directory.
        overrides: its Hydra overrides without ``seed`` (the variant's identity).
        seed: the run's seed (None when unseeded or unknown).
        metrics: ``final_metrics.json`` (null -> nan).
        curves: metric key -> [(step, value)], the val curves (empty without logs).
        head_variant: ``cheeger.run.keys.head_variant`` of its config ("" if unknown).
        variant: the label it is shown under (set by :func:`assign_variants`).
    """

    directory: Path
    overrides: tuple[str, ...]
    seed: int | None
    metrics: dict[str, float]
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    head_variant: str = ""
    variant: str = ""


def load_run(directory: str | Path, curves: Sequence[str] = CURVES) -> RunData:
    """Read one run directory.

    Raises:
        RunDirError: no ``final_metrics.json`` (failed or unfinished run), or a file that
            does not parse; the message names it.
    """
    directory = Path(directory)
    metrics_path = directory / FINAL_METRICS_FILE
    if not metrics_path.is_file():
        raise RunDirError(f"{metrics_path}: missing (the run failed or has not finished)")
    raw = _load(metrics_path, lambda _: load_final_metrics(directory))
    if not isinstance(raw, dict):
        raise RunDirError(f"{metrics_path}: expected a JSON object of metrics, found {raw!r}")
    metrics = {str(k): math.nan if v is None else float(v) for k, v in raw.items()}
    config = _read_yaml(directory / "config.yaml") or _read_yaml(directory / ".hydra/config.yaml")
    hydra = _read_yaml(directory / ".hydra" / "hydra.yaml") or {}
    overrides = _read_yaml(directory / ".hydra" / "overrides.yaml")
    if overrides is None:
        job = directory / "job.json"  # a multirun job (cheeger.run.sweep_summary)
        overrides = _load(job, _text(json.loads)).get("overrides", []) if job.is_file() else []
    if not isinstance(overrides, list):
        raise RunDirError(f"{directory / '.hydra/overrides.yaml'}: expected a list of overrides")
    config = config if isinstance(config, dict) else {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    seed = config.get("seed")
    run = RunData(
        directory=directory,
        overrides=tuple(str(o) for o in overrides if not _is_seed(str(o))),
        seed=None if seed is None else int(seed),
        metrics=metrics,
        head_variant=keys.head_variant(config, choices) if config else "",
    )
    run.curves = read_curves(directory, curves)
    return run


def read_curves(directory: Path, names: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) per metric from ``metrics.csv``, else from the run's offline W&B run.

    Raises:
        RunDirError: a ``metrics.csv`` or W&B run file that cannot be read.
    """
    path = directory / "metrics.csv"
    if path.is_file():
        rows = _load(path, _text(lambda text: list(csv.DictReader(text.splitlines()))))
        curves = {}
        for name in names:
            points = []
            for row in rows:
                value, step = _number(row.get(name)), _number(row.get("step"))
                if value is not None and step is not None and math.isfinite(value):
                    points.append((step, value))
            curves[name] = points
        return curves
    found = offline_runs(directory)
    if not found:
        return {name: [] for name in names}
    try:
        run = read_offline_run(found[-1])
    except Exception as error:  # a damaged record file
        raise RunDirError(f"{found[-1]}: cannot be read ({error})") from error
    return {name: run.curve(name) for name in names}


def find_runs(paths: Iterable[str | Path]) -> list[RunData]:
    """Every readable run at or below ``paths`` (run or sweep directories), in path order.

    Unreadable run directories are named in a warning and left out.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no readable run at all (naming the paths).
    """
    paths = [Path(p) for p in paths]
    runs, seen = [], set()
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"cheeger.compare: {path} does not exist")
        for directory in _run_dirs(path):
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            try:
                runs.append(load_run(directory))
            except RunDirError as error:
                warnings.warn(f"skipping run {directory}: {error}", stacklevel=2)
    if not runs:
        raise ValueError(
            "cheeger.compare: no run with a readable final_metrics.json under "
            + ", ".join(str(p) for p in paths)
        )
    return runs


def _run_dirs(path: Path) -> list[Path]:
    """``path`` when it is a run directory, else every run directory below it."""
    if any((path / marker).exists() for marker in RUN_MARKERS):
        return [path]
    found = {hit.parent for marker in RUN_MARKERS for hit in path.rglob(marker)}
    # W&B's own run folders are not cheeger runs.
    return sorted(d for d in found if "wandb" not in d.relative_to(path).parts)


def assign_variants(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Group runs with the same overrides (``seed`` aside) and label each group.

    The label is the overrides the group does not share with every run; a group with
    none of its own is labelled by its head variant, else ``(shared overrides)``.
    """
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        groups.setdefault(run.overrides, []).append(run)
    shared = set.intersection(*(set(key) for key in groups)) if groups else set()
    labelled: dict[str, list[RunData]] = {}
    for key, group in groups.items():
        own = " ".join(o for o in key if o not in shared)
        label = own or group[0].head_variant or "(shared overrides)"
        while label in labelled:
            label += "'"
        for run in group:
            run.variant = label
        labelled[label] = group
    return labelled


def default_baseline(variants: Mapping[str, Sequence[RunData]]) -> str:
    """The conv-head variant with the fewest overrides, else the first variant."""
    conv = [name for name, group in variants.items() if group[0].head_variant == "conv"]
    if conv:
        return min(conv, key=lambda name: len(variants[name][0].overrides))
    return next(iter(variants))


# ------------------------------------------------------------------ statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def paired(baseline: Mapping[int, float], other: Mapping[int, float]) -> dict:
    """Paired comparison over the seeds both have: differences other - baseline, their
    mean and std, and the two-sided paired t-test p-value (nan below 2 pairs or when
    every difference is the same)."""
    seeds = sorted(set(baseline) & set(other))
    diffs = [other[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    p_value = math.nan
    if len(diffs) >= 2 and np.ptp(diffs) > 1e-12:  # equal differences: t undefined
        p_value = float(
            stats.ttest_rel([other[s] for s in seeds], [baseline[s] for s in seeds]).pvalue
        )
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "std": std, "p": p_value}


def by_seed(group: Sequence[RunData], key: str) -> dict[int, float]:
    """seed -> final value of ``key`` (runs without a seed are numbered by position)."""
    return {
        run.seed if run.seed is not None else -1 - i: run.metrics.get(key, math.nan)
        for i, run in enumerate(group)
    }


# ---------------------------------------------------------------------- tables
@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |"]
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return f"<h2>{html.escape(self.title)}</h2><table><tr>{head}</tr>{body}</table>"


def _value(value: float, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def mean_pm_std(values: Sequence[float], digits: int = 4) -> str:
    """ "mean ± std" of the finite values ("mean" for one, "-" for none)."""
    mean, std = mean_std(_finite(values))
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def tables(variants: Mapping[str, Sequence[RunData]], baseline: str) -> list[Table]:
    """Scores per variant, paired differences against ``baseline``, and one row per run."""
    titles = [keys.SCORE_TITLES[key.split("/", 1)[1]] for key in TEST_SCORES]
    scores = Table(
        "Test scores (mean ± std over seeds)",
        ["variant", "head", "seeds", *titles],
        [
            [
                name,
                group[0].head_variant,
                str(len(group)),
                *(mean_pm_std([r.metrics.get(k, math.nan) for r in group]) for k in TEST_SCORES),
            ]
            for name, group in variants.items()
        ],
    )
    differences = Table(
        f"Paired over seeds: variant - {baseline}",
        ["variant", "score", "seeds", "per-seed differences", "mean ± std", "paired t-test p"],
        [],
    )
    for name, group in variants.items():
        if name == baseline:
            continue
        for key, title in zip(TEST_SCORES, titles, strict=True):
            result = paired(by_seed(variants[baseline], key), by_seed(group, key))
            spread = "" if math.isnan(result["std"]) else f" ± {result['std']:.4f}"
            differences.rows.append(
                [
                    name,
                    title,
                    ", ".join(str(s) for s in result["seeds"]) or "(none in common)",
                    ", ".join(f"{d:+.4f}" for d in result["diffs"]) or "-",
                    "-" if math.isnan(result["mean"]) else f"{result['mean']:+.4f}{spread}",
                    "n/a" if math.isnan(result["p"]) else f"{result['p']:.3f}",
                ]
            )
    runs = Table(
        "Runs (final_metrics.json)",
        ["variant", "seed", "run directory", *titles],
        [
            [
                run.variant,
                "-" if run.seed is None else str(run.seed),
                str(run.directory),
                *(_value(run.metrics.get(k, math.nan)) for k in TEST_SCORES),
            ]
            for group in variants.values()
            for run in group
        ],
    )
    return [scores, differences, runs]


# --------------------------------------------------------------------- figures
def _colors(names: Sequence[str]) -> dict[str, tuple]:
    cmap = _pyplot().get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def plot_curves(variants: Mapping[str, Sequence[RunData]], path: Path) -> Path | None:
    """Val mIoU and Boundary IoU over steps per variant: mean over seeds, min/max band."""
    plotted = [k for k in CURVES if any(r.curves.get(k) for g in variants.values() for r in g)]
    if not plotted:
        return None
    plt, colors = _pyplot(), _colors(list(variants))
    fig, axes = plt.subplots(1, len(plotted), figsize=(5.2 * len(plotted), 3.6), squeeze=False)
    for ax, key in zip(axes[0], plotted, strict=True):
        for name, group in variants.items():
            series = [dict(r.curves.get(key, [])) for r in group]
            steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if not steps:
                continue
            values = np.asarray([[s[step] for step in steps] for s in series])
            ax.plot(steps, values.mean(0), marker="o", ms=3, color=colors[name], label=name)
            if len(series) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=colors[name], alpha=0.2)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_scores(variants: Mapping[str, Sequence[RunData]], path: Path) -> Path:
    """Test mIoU, Boundary IoU and BF per variant: bars of the mean, seed std error bars,
    one dot per seed."""
    plt, colors = _pyplot(), _colors(list(variants))
    fig, ax = plt.subplots(
        figsize=(1.6 + 1.3 * len(TEST_SCORES) * max(len(variants), 1) ** 0.6, 3.8)
    )
    width = 0.8 / max(len(variants), 1)
    for j, (name, group) in enumerate(variants.items()):
        xs = np.arange(len(TEST_SCORES)) + (j - (len(variants) - 1) / 2) * width
        values = [[r.metrics.get(k, math.nan) for r in group] for k in TEST_SCORES]
        means = [mean_std(v)[0] for v in values]
        spreads = [0.0 if math.isnan(mean_std(v)[1]) else mean_std(v)[1] for v in values]
        ax.bar(xs, means, width, yerr=spreads, capsize=3, color=colors[name], label=name)
        for x, seeds in zip(xs, values, strict=True):
            ax.plot([x] * len(seeds), seeds, "k.", ms=3)
    ax.set_xticks(np.arange(len(TEST_SCORES)))
    ax.set_xticklabels([keys.SCORE_TITLES[k.split("/", 1)[1]] for k in TEST_SCORES])
    ax.set_ylabel("test score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_scatter(variants: Mapping[str, Sequence[RunData]], path: Path) -> Path:
    """Test mIoU against test Boundary IoU: one dot per run, a cross at each variant's mean."""
    plt, colors = _pyplot(), _colors(list(variants))
    x_key, y_key = TEST_SCORES[0], TEST_SCORES[1]
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, group in variants.items():
        xs = [r.metrics.get(x_key, math.nan) for r in group]
        ys = [r.metrics.get(y_key, math.nan) for r in group]
        ax.scatter(xs, ys, color=colors[name], label=name, s=22)
        ax.scatter([np.nanmean(xs)], [np.nanmean(ys)], color=colors[name], marker="x", s=80)
    ax.set_xlabel(f"test {keys.SCORE_TITLES[keys.MIOU]}")
    ax.set_ylabel(f"test {keys.SCORE_TITLES[keys.BOUNDARY_IOU]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_trimap(variants: Mapping[str, Sequence[RunData]], path: Path) -> Path | None:
    """Test IoU inside bands of growing width around the true boundaries, per variant
    (mean over seeds, min/max band)."""
    plt, colors = _pyplot(), _colors(list(variants))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    drawn = False
    for name, group in variants.items():
        widths = sorted(
            {
                w
                for r in group
                for k in r.metrics
                if (w := keys.trimap_width(k)) is not None and k.startswith("test/")
            }
        )
        if not widths:
            continue
        values = np.asarray(
            [[r.metrics.get(keys.trimap("test", w), math.nan) for w in widths] for r in group]
        )
        ax.plot(widths, values.mean(0), marker="o", color=colors[name], label=name)
        if len(group) > 1:
            ax.fill_between(widths, values.min(0), values.max(0), color=colors[name], alpha=0.2)
        drawn = True
    if not drawn:
        _pyplot().close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("band width around true boundaries (px)")
    ax.set_ylabel("test mIoU inside the band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_iou(variants: Mapping[str, Sequence[RunData]], path: Path) -> Path | None:
    """Heatmap of the test IoU per class (columns) and variant (rows), mean over seeds."""
    prefix = "test" + keys.CLASS_IOU_INFIX
    classes = list(
        dict.fromkeys(
            k[len(prefix) :]
            for g in variants.values()
            for r in g
            for k in r.metrics
            if k.startswith(prefix)
        )
    )
    if not classes:
        return None
    grid = np.asarray(
        [
            [
                mean_std(_finite(r.metrics.get(prefix + c, math.nan) for r in group))[0]
                for c in classes
            ]
            for group in variants.values()
        ]
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * len(classes), 1.2 + 0.45 * len(variants)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels(list(variants), fontsize=8)
    for (r, c), value in np.ndenumerate(grid):
        if not math.isnan(value):
            ax.text(
                c,
                r,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if value < 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="test IoU")
    fig.tight_layout()
    return _save(fig, path)


FIGURES = {
    "curves": plot_curves,
    "test_scores": plot_scores,
    "miou_vs_boundary_iou": plot_scatter,
    "trimap": plot_trimap,
    "class_iou": plot_class_iou,
}


@dataclass
class Comparison:
    html: Path
    markdown: Path
    figures: dict[str, Path]
    tables: list[Table]
    baseline: str


def write_comparison(
    variants: Mapping[str, Sequence[RunData]],
    out_dir: str | Path,
    baseline: str | None = None,
    title: str = "cheeger: runs compared",
    prefix: str = "",
) -> Comparison:
    """Write the page, the tables and the figures of ``variants`` into ``out_dir``.

    Args:
        prefix: put before every file name (``head_study_`` -> head_study_trimap.png).

    Raises:
        ValueError: ``baseline`` is not one of the variants (the message lists them).
    """
    if not variants:
        raise ValueError("write_comparison: no variants to compare")
    if baseline is None:
        baseline = default_baseline(variants)
    elif baseline not in variants:
        raise ValueError(
            f"--baseline {baseline!r} is not a variant; the variants are {list(variants)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, plot in FIGURES.items():
        written = plot(variants, out_dir / f"{prefix}{name}.png")
        if written is not None:
            figures[name] = written
    made = tables(variants, baseline)
    markdown = out_dir / f"{prefix}comparison.md"
    text = f"# {title}\n\nBaseline: {baseline}.\n\n" + "\n".join(t.markdown() for t in made)
    markdown.write_text(text)
    page = out_dir / f"{prefix}comparison.html"
    page.write_text(_page(title, baseline, made, figures))
    return Comparison(page, markdown, figures, made, baseline)


def _page(title: str, baseline: str, made: Sequence[Table], figures: Mapping[str, Path]) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(name)}'
        "</figcaption></figure>"
        for name, path in figures.items()
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}"
        "figure{display:inline-block;margin:0 1em 1em 0}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Baseline: {html.escape(baseline)}.</p>{images}"
        + "".join(t.html() for t in made)
        + "</body></html>\n"
    )


# ----------------------------------------------------------------------- utils
def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _load(path: Path, load):
    """``load(path)``; any failure to read or parse is a RunDirError naming the file."""
    try:
        return load(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error, yaml.YAMLError) as error:
        raise RunDirError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error


def _text(parse):
    """A loader that parses a file's text."""
    return lambda path: parse(path.read_text())


def _read_yaml(path: Path):
    return _load(path, _text(yaml.safe_load)) if path.is_file() else None


def _is_seed(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "seed"


def _number(text: str | None) -> float | None:
    try:
        return None if text in (None, "") else float(text)
    except ValueError:
        return None


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m cheeger.compare``."""
    parser = argparse.ArgumentParser(
        prog="python -m cheeger.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun sweep directories")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare"), help="output folder")
    parser.add_argument(
        "--baseline", help="the variant the others are compared with (default: conv)"
    )
    parser.add_argument("--title", default="cheeger: runs compared")
    return parser


def main(argv: Sequence[str] | None = None) -> Comparison:
    args = parser().parse_args(argv)
    try:
        variants = assign_variants(find_runs(args.paths))
        result = write_comparison(variants, args.out, args.baseline, args.title)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    print(result.markdown.read_text())
    print(f"wrote {result.html} and {len(result.figures)} figures in {args.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
