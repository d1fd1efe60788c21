"""Reading and writing the image files of datasets and predictions.

Every reader raises ``SampleError`` naming the file when it cannot be decoded,
so an unreadable file in a dataset of thousands is found at once. Label maps
are written as single-channel 8-bit PNGs (mode ``L``), the format the
Cityscapes tools read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cheeger.data.dataset import SampleError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_hidden(path: Path, root: Path) -> bool:
    """Whether a name of ``path`` below ``root`` starts with a dot.

    That covers hidden files and folders (``.ipynb_checkpoints/``) and the AppleDouble
    files macOS leaves beside every file it copies (``._x.png``), which carry an image
    suffix but hold no image.
    """
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    return any(part.startswith(".") for part in parts)


def image_files(paths: Iterable[Path], root: Path) -> list[Path]:
    """The visible image files among ``paths`` (by suffix, any case), sorted."""
    return sorted(
        p
        for p in paths
        if p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p, root) and p.is_file()
    )


def files_fingerprint(paths: Iterable[Path]) -> str:
    """A digest of the files' paths, sizes and modification times: it changes when any
    file is added, removed, replaced or edited (what a cached statistic depends on)."""
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as error:
        raise SampleError(f"{path}: cannot read the image file ({error})") from error
    return image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB (H, W, 3) uint8; greyscale and palette images are expanded."""
    image = _open(path)
    if image.mode not in ("RGB", "L", "P", "RGBA", "LA", "1", "CMYK", "YCbCr"):
        raise SampleError(
            f"{path}: image mode {image.mode!r} is not 8-bit colour or greyscale; "
            "convert it to an 8-bit PNG or JPEG"
        )
    return np.asarray(image.convert("RGB"))


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A single-channel label file (8- or 16-bit, or palette indices) as (H, W) int64."""
    image = _open(path)
    array = np.asarray(image)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise SampleError(
            f"{path}: a label map must be single-channel (one class id per pixel), "
            f"found mode {image.mode!r} with shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.int64)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as error:
        raise SampleError(f"{path}: cannot read the image file ({error})") from error
    return height, width


def write_label_map(
    path: str | os.PathLike, labels: np.ndarray, size: tuple[int, int] | None = None
) -> Path:
    """Write (h, w) ids in [0, 255] as an 8-bit single-channel PNG; returns the path.

    With ``size`` = (H, W) the map is first resized to it by nearest neighbour
    (predictions made at a reduced resolution, written at the ground truth's).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), found shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"labels must lie in [0, 255] for an 8-bit PNG, found {labels.min()}..{labels.max()}"
        )
    labels = labels.astype(np.uint8)
    if size is not None and labels.shape != tuple(size):
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return write_png(path, labels)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (H, W, 3) or single-channel (H, W) uint8 array as PNG, creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path
