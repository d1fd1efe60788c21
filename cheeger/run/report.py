"""Human-readable results: per-class metric tables and image panels."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cheeger.data.classes import IGNORE_INDEX
from cheeger.metrics.results import StageResult


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def results_table(class_names: Sequence[str], result: StageResult, title: str) -> str:
    """Fixed-width table of a stage's results (``SegmentationModule.results[stage]``).

    Columns: class, IoU, and when present Boundary IoU and BF per class; then the
    means, pixel accuracy and the trimap IoU curve. Classes absent from ground
    truth and prediction show '-' and are left out of the means; a mean that left
    classes out says over how many it ran, and a footnote names the others (a mean
    of 1.0 over one class of two is not a perfect score).
    """
    columns = [("IoU", result.iou)]
    if result.boundary_iou_per_class is not None:
        columns.append(("BIoU", result.boundary_iou_per_class))
    if result.bf_per_class is not None:
        columns.append(("BF", result.bf_per_class))
    width = max(12, *(len(n) for n in class_names))
    header = f"{'class':<{width}}" + "".join(f"  {name:>7}" for name, _ in columns)
    rule = "-" * len(header)
    lines = [title, header, rule]
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}}" + "".join(f"  {_cell(float(v[i])):>7}" for _, v in columns))
    lines.append(rule)
    # (label, mean, the per-class scores it averages or None)
    summary: list[tuple[str, Any, Any]] = [
        ("mIoU", result.miou, result.iou),
        ("pixel acc", result.pixel_acc, None),
    ]
    if result.boundary_iou is not None:
        summary.append(("boundary_iou", result.boundary_iou, result.boundary_iou_per_class))
    if result.bf is not None:
        summary.append(("bf", result.bf, result.bf_per_class))
    summary += [(f"trimap_iou@{w}", v, None) for w, v in result.trimap.items()]
    left_out: set[str] = set()
    for key, value, scores in summary:
        line = f"{key:<{width}}  {_cell(float(value)):>7}"
        if scores is not None:
            missing = [n for n, v in zip(class_names, scores, strict=True) if _nan(v)]
            if missing:
                line += f"  over {len(class_names) - len(missing)} of {len(class_names)} classes*"
                left_out.update(missing)
        lines.append(line)
    if left_out:
        names = ", ".join(n for n in class_names if n in left_out)
        lines.append(f"* left out: absent from ground truth and prediction ({names})")
    return "\n".join(lines)


def _nan(value: Any) -> bool:
    return math.isnan(float(value))


def error_map(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """RGB (H, W, 3) uint8: correct pixels dark grey, wrong pixels red, ignored pixels black."""
    out = np.full((*target.shape, 3), 60, dtype=np.uint8)
    out[pred != target] = (230, 30, 30)
    out[target == ignore_index] = 0
    return out


def save_panel(
    rows: Sequence[dict[str, np.ndarray]], path: str | Path, title: str | None = None
) -> Path:
    """Save a grid of images: one row per sample, one column per key (RGB uint8 (H, W, 3)).

    Every row must have the same keys, which become the column titles.
    """
    plt = _pyplot()
    if not rows:
        raise ValueError("save_panel needs at least one row")
    columns = list(rows[0])
    h, w = rows[0][columns[0]].shape[:2]
    scale = 3.2 / max(w, 1)
    fig, axes = plt.subplots(
        len(rows),
        len(columns),
        figsize=(len(columns) * w * scale, len(rows) * h * scale + 0.6),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, key in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(row[key], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(key, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_class_scores(
    class_names: Sequence[str],
    scores: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> Path:
    """Horizontal grouped bar chart of per-class scores (e.g. IoU, BIoU); NaN classes dropped."""
    plt = _pyplot()
    keep = [
        i
        for i in range(len(class_names))
        if any(not math.isnan(float(v[i])) for v in scores.values())
    ]
    names = [class_names[i] for i in keep]
    fig, ax = plt.subplots(figsize=(7, 0.42 * max(len(keep), 1) * max(1, len(scores)) ** 0.5 + 1.2))
    bar = 0.8 / max(len(scores), 1)
    for j, (label, values) in enumerate(scores.items()):
        ys = np.arange(len(keep)) + j * bar
        xs = [0.0 if math.isnan(float(values[i])) else float(values[i]) for i in keep]
        kwargs = {}
        if colors is not None and j == 0:
            kwargs["color"] = [np.asarray(colors[i]) / 255 for i in keep]
        ax.barh(ys, xs, height=bar, label=label, edgecolor="black", linewidth=0.4, **kwargs)
        for y, x in zip(ys, xs, strict=True):
            ax.text(min(x + 0.01, 0.93), y, f"{x:.2f}", va="center", fontsize=7)
    ax.set_yticks(np.arange(len(keep)) + bar * (len(scores) - 1) / 2)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title(title)
    if len(scores) > 1:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(
    class_names: Sequence[str], confmat: np.ndarray, path: str | Path, title: str
) -> Path:
    """Row-normalised confusion matrix (rows: ground truth) over classes that occur."""
    plt = _pyplot()
    confmat = np.asarray(confmat, dtype=np.float64)
    keep = np.flatnonzero(confmat.sum(0) + confmat.sum(1) > 0)
    sub = confmat[np.ix_(keep, keep)]
    norm = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    size = 0.45 * len(keep) + 2.5
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [class_names[i] for i in keep]
    ax.set_xticks(range(len(keep)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(keep)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for (r, c), v in np.ndenumerate(norm):
        if v >= 0.01:
            ax.text(
                c,
                r,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def heat_map(values: np.ndarray) -> np.ndarray:
    """(H, W) real map -> RGB uint8 with a diverging colour map symmetric around 0."""
    plt = _pyplot()
    scale = float(np.abs(values).max()) or 1.0
    rgba = plt.get_cmap("RdBu_r")((values / scale + 1.0) / 2.0)
    return (rgba[..., :3] * 255).astype(np.uint8)


def plot_response(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str
) -> Path:
    """h(λ) against λ, one line per image: curves[label] = (eigenvalues, responses)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, (lam, h) in curves.items():
        order = np.argsort(np.asarray(lam, dtype=np.float64))
        ax.plot(np.asarray(lam)[order], np.asarray(h)[order], marker="o", markersize=3, label=label)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("h(λ)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
