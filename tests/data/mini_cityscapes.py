"""A miniature Cityscapes tree on disk: the real layout and file names, tiny images.

Label maps are rectangles of Cityscapes *label ids*, drawn from ids that map to
train ids and ids that are ignored (unlabeled, ego vehicle, static, parking,
caravan, ...); each image paints every rectangle in its label's colour plus
noise, so a model can tell the classes apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 32, 64
# (split, city, number of frames)
FRAMES = (
    ("train", "alpha", 2),
    ("train", "beta", 2),
    ("val", "alpha", 2),
    ("val", "gamma", 1),
    ("test", "delta", 1),
)
EVALUATED_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
IGNORED_IDS = (0, 1, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)


def label_ids(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(H, W) uint8 label ids: a background id and a dozen random rectangles."""
    ids = np.full((height, width), rng.choice(EVALUATED_IDS), dtype=np.uint8)
    for _ in range(12):
        pool = IGNORED_IDS if rng.random() < 0.3 else EVALUATED_IDS
        top, left = rng.integers(0, height - 4), rng.integers(0, width - 4)
        h, w = rng.integers(3, height // 2), rng.integers(3, width // 2)
        ids[top : top + h, left : left + w] = rng.choice(pool)
    return ids


def image_for(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB (H, W, 3) uint8: a fixed colour per label id, plus noise."""
    colors = np.random.default_rng(1234).integers(0, 256, (256, 3))
    noisy = colors[ids] + rng.normal(0, 12, (*ids.shape, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_mini_cityscapes(root: Path, seed: int = 0) -> Path:
    """Write leftImg8bit/ and gtFine/ for the FRAMES above under ``root``; returns root."""
    rng = np.random.default_rng(seed)
    for split, city, count in FRAMES:
        for frame in range(count):
            stem = f"{city}_{frame:06d}_{19 * frame + 7:06d}"
            ids = label_ids(rng)
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image_for(ids, rng)).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids).save(label_dir / f"{stem}_gtFine_labelIds.png")
    return root
