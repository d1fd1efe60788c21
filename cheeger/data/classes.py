"""The Cityscapes train-id label space that every cheeger dataset maps onto.

Cityscapes defines 34 label ids; 19 of them are evaluated and renumbered as
train ids 0..18. Everything else (and every pixel a dataset wants ignored) is
``IGNORE_INDEX`` = 255. Sharing one label space lets a model trained on the
synthetic city be evaluated on real Cityscapes and vice versa.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegClass:
    """One evaluated class: its train id, name and display colour (RGB)."""

    train_id: int
    name: str
    color: tuple[int, int, int]


# Official Cityscapes train ids, names and colours.
CITYSCAPES_CLASSES: tuple[SegClass, ...] = (
    SegClass(0, "road", (128, 64, 128)),
    SegClass(1, "sidewalk", (244, 35, 232)),
    SegClass(2, "building", (70, 70, 70)),
    SegClass(3, "wall", (102, 102, 156)),
    SegClass(4, "fence", (190, 153, 153)),
    SegClass(5, "pole", (153, 153, 153)),
    SegClass(6, "traffic light", (250, 170, 30)),
    SegClass(7, "traffic sign", (220, 220, 0)),
    SegClass(8, "vegetation", (107, 142, 35)),
    SegClass(9, "terrain", (152, 251, 152)),
    SegClass(10, "sky", (70, 130, 180)),
    SegClass(11, "person", (220, 20, 60)),
    SegClass(12, "rider", (255, 0, 0)),
    SegClass(13, "car", (0, 0, 142)),
    SegClass(14, "truck", (0, 0, 70)),
    SegClass(15, "bus", (0, 60, 100)),
    SegClass(16, "train", (0, 80, 100)),
    SegClass(17, "motorcycle", (0, 0, 230)),
    SegClass(18, "bicycle", (119, 11, 32)),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CITYSCAPES_CLASSES)
NUM_CLASSES = len(CITYSCAPES_CLASSES)
TRAIN_ID = {c.name: c.train_id for c in CITYSCAPES_CLASSES}


def palette(classes: tuple[SegClass, ...] = CITYSCAPES_CLASSES) -> np.ndarray:
    """Colour lookup table, shape (256, 3) uint8: row ``train_id`` is its colour.

    Ids without a class (including ``IGNORE_INDEX``) are black.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    for c in classes:
        table[c.train_id] = c.color
    return table


def colorize(mask: np.ndarray, classes: tuple[SegClass, ...] = CITYSCAPES_CLASSES) -> np.ndarray:
    """Map a label image (H, W) of train ids to an RGB image (H, W, 3) uint8."""
    return palette(classes)[np.asarray(mask, dtype=np.uint8)]


def check_palette(
    palette: Sequence[Sequence[int]], num_classes: int
) -> tuple[tuple[int, ...], ...]:
    """Validate one RGB colour (three ints in 0..255) per class; returns it as tuples.

    Raises:
        ValueError: naming ``dataset.palette``, the expected and the found shape or value.
    """
    colors = tuple(tuple(int(v) for v in color) for color in palette)
    if len(colors) != num_classes:
        raise ValueError(
            f"dataset.palette has {len(colors)} colours, expected num_classes={num_classes}"
        )
    for i, color in enumerate(colors):
        if len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise ValueError(
                f"dataset.palette[{i}] must be [r, g, b] with values in 0..255, found {list(color)}"
            )
    return colors


def class_palette(num_classes: int, colors: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Colour lookup table (256, 3) uint8 for ``num_classes`` classes.

    ``colors`` (one RGB per class) when given; else the Cityscapes colours for 19
    classes; else evenly spaced hues (golden-ratio steps, so neighbouring ids differ).
    Rows past the classes (including ``IGNORE_INDEX``) are black.
    """
    if colors is None and num_classes == NUM_CLASSES:
        return palette()
    if colors is None:
        colors = [
            tuple(round(255 * v) for v in colorsys.hsv_to_rgb((0.61803398875 * i) % 1, 0.75, 0.95))
            for i in range(num_classes)
        ]
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:num_classes] = check_palette(colors, num_classes)
    return table
