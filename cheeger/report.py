"""Human-readable results: per-class metric tables and image panels."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cheeger.data.classes import IGNORE_INDEX


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def results_table(class_names: Sequence[str], result: Mapping[str, Any], title: str) -> str:
    """Fixed-width table of a stage's results (``SegmentationModule.results[stage]``).

    Columns: class, IoU, and when present Boundary IoU and BF per class; then the
    means, pixel accuracy and the trimap IoU curve. Classes absent from ground
    truth and prediction show '-'.
    """
    columns = [("IoU", result["iou"])]
    if "boundary_iou_per_class" in result:
        columns.append(("BIoU", result["boundary_iou_per_class"]))
    if "bf_per_class" in result:
        columns.append(("BF", result["bf_per_class"]))
    width = max(12, *(len(n) for n in class_names))
    header = f"{'class':<{width}}" + "".join(f"  {name:>7}" for name, _ in columns)
    rule = "-" * len(header)
    lines = [title, header, rule]
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}}" + "".join(f"  {_cell(float(v[i])):>7}" for _, v in columns))
    lines.append(rule)
    summary = [("mIoU", result["mIoU"]), ("pixel acc", result["pixel_acc"])]
    summary += [(k, result[k]) for k in ("boundary_iou", "bf") if k in result]
    summary += [(k, v) for k, v in result.items() if k.startswith("trimap_iou@")]
    for key, value in summary:
        lines.append(f"{key:<{width}}  {_cell(float(value)):>7}")
    return "\n".join(lines)


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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
