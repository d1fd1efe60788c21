"""Human-readable results: per-class IoU tables and image panels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cheeger.data.classes import IGNORE_INDEX


def iou_table(
    class_names: Sequence[str], iou: Sequence[float], miou: float, pixel_acc: float, title: str
) -> str:
    """A fixed-width table of per-class IoU (classes absent from GT and prediction show '-')."""
    width = max(12, *(len(n) for n in class_names))
    lines = [title, f"{'class':<{width}}  IoU", "-" * (width + 8)]
    for name, value in zip(class_names, iou, strict=True):
        cell = "-" if math.isnan(value) else f"{value:.4f}"
        lines.append(f"{name:<{width}}  {cell}")
    lines.append("-" * (width + 8))
    lines.append(f"{'mIoU':<{width}}  {miou:.4f}")
    lines.append(f"{'pixel acc':<{width}}  {pixel_acc:.4f}")
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
