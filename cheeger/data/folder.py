"""Any folder of images and label masks as a sample source (bring your own data).

Images and masks are found under ``root`` by two locations, each a folder
(every image file below it, recursively) or a glob pattern, and paired by file
stem: the mask of ``img_0042.jpg`` is ``img_0042{mask_suffix}.<any image ext>``.
Masks are single-channel files whose pixel values are class ids (0..K-1) or the
ignore index; an optional ``label_map`` renames raw values first (for example
``{0: 0, 255: 1}`` for binary masks saved as 0/255).

Splits come either from the folder layout, when the locations contain
``{split}`` (``images/{split}`` -> ``images/train``, ``images/val``, ...), or
from a seeded shuffle of all pairs cut by ``fractions``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cheeger.data.dataset import SampleError, SampleSource
from cheeger.data.image_io import (
    files_fingerprint,
    image_files,
    image_size,
    read_label_map,
    read_rgb,
    write_label_map,
)

SPLITS = ("train", "val", "test")
GLOB_CHARS = set("*?[")
# Formats whose compression changes pixel values, and so class ids at every edge.
LOSSY_MASK_SUFFIXES = (".jpg", ".jpeg")


def find_images(root: Path, location: str) -> list[Path]:
    """Image files at ``root/location``: a folder (recursive) or a glob pattern, sorted."""
    if GLOB_CHARS & set(location):
        found = root.glob(location)
    else:
        folder = root / location
        if not folder.is_dir():
            raise FileNotFoundError(
                f"folder dataset: {folder} is not a folder (from dataset.root={str(root)!r} "
                f"and location {location!r})"
            )
        found = folder.rglob("*")
    return image_files(found, root)


def _by_key(paths: list[Path], suffix: str, what: str) -> dict[str, Path]:
    keyed: dict[str, Path] = {}
    for path in paths:
        key = path.stem[: len(path.stem) - len(suffix)] if suffix else path.stem
        if key in keyed:
            raise SampleError(
                f"folder dataset: {keyed[key]} and {path} are both the {what} of {key!r}; "
                "stems must be unique"
            )
        keyed[key] = path
    return keyed


def pair_images_and_masks(
    images: list[Path], masks: list[Path], mask_suffix: str = ""
) -> list[tuple[Path, Path]]:
    """(image, mask) pairs sorted by key; masks may share the images' folder.

    When ``mask_suffix`` is set, files whose stem ends with it are masks and
    never images, and masks without it are left out (they are the images, when
    both locations are one folder).

    Raises:
        SampleError: an image without mask or a mask without image (naming the file),
            or two files with the same key.
    """
    if mask_suffix:
        images = [p for p in images if not p.stem.endswith(mask_suffix)]
        masks = [p for p in masks if p.stem.endswith(mask_suffix)]
    image_of = _by_key(images, "", "image")
    mask_of = _by_key(masks, mask_suffix, "mask")
    for key, path in image_of.items():
        if key not in mask_of:
            raise SampleError(f"{path}: no mask named {key}{mask_suffix}.<ext> among the masks")
    for key, path in mask_of.items():
        if key not in image_of:
            raise SampleError(f"{path}: no image named {key}.<ext> among the images")
    return [(image_of[k], mask_of[k]) for k in sorted(image_of)]


def split_by_fraction(
    count: int, split: str, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Indices of ``split`` among ``count`` items shuffled with ``seed``.

    The shuffled order is cut at round(count x cumulative fraction) in the order
    train, val, test; fractions may sum to less than 1 (the rest is unused).
    """
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"dataset.source.fractions keys must be in {SPLITS}, found {unknown}")
    values = [float(fractions.get(s, 0.0)) for s in SPLITS]
    if min(values) < 0 or sum(values) > 1 + 1e-9:
        raise ValueError(
            f"dataset.source.fractions must be >= 0 and sum to at most 1, found {dict(fractions)}"
        )
    cuts = np.round(np.cumsum([0.0, *values]) * count).astype(int)
    order = np.random.default_rng(seed).permutation(count)
    i = SPLITS.index(split)
    return np.sort(order[cuts[i] : cuts[i + 1]])


class ImageMaskFolder(SampleSource):
    """Image/mask pairs of one split from a folder.

    Args:
        root: the dataset folder.
        split: train | val | test.
        images, masks: locations relative to ``root``: a folder or a glob pattern
            (e.g. ``images/{split}`` or ``scans/**/*.png``); ``{split}`` is replaced
            by the split name.
        mask_suffix: the mask's stem is the image's stem plus this (e.g. ``_mask``).
        fractions: ``{train: 0.8, val: 0.2}``: split a single pool of pairs by a
            seeded shuffle; must be None when the locations contain ``{split}``.
        seed: the shuffle's seed (same seed, same split on every machine).
        label_map: ``{raw mask value: class id}``; every value in a mask must be a
            key. None: mask values are used as they are.
        allow_lossy_masks: accept JPEG masks. False (default): refused, because lossy
            compression changes the ids (a 0/1 mask decodes to 0, 1, 2, ... near edges,
            and a dark mask can decode to all 0).

    ``load(i)`` returns an RGB (H, W, 3) uint8 image and an (H, W) integer mask;
    ``SegmentationDataset`` then checks sizes and the class set, naming the files.
    """

    writes_predictions = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        images: str = "images/{split}",
        masks: str = "masks/{split}",
        mask_suffix: str = "",
        fractions: Mapping[str, float] | None = None,
        seed: int = 0,
        label_map: Mapping[int, int] | None = None,
        allow_lossy_masks: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"folder dataset split must be one of {SPLITS}, found {split!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset.root={str(root)!r} is not a folder")
        self.split = split
        by_folder = "{split}" in images or "{split}" in masks
        if by_folder and fractions is not None:
            raise ValueError(
                "dataset.source.fractions must be null when dataset.source.images/masks "
                f"contain {{split}} (the folders are the split); found images={images!r}, "
                f"masks={masks!r}, fractions={dict(fractions)}"
            )
        if not by_folder and fractions is None:
            raise ValueError(
                f"dataset.source.images={images!r} and masks={masks!r} have no {{split}}: "
                "set dataset.source.fractions (e.g. {train: 0.8, val: 0.2}) to split them"
            )
        image_location, mask_location = images.format(split=split), masks.format(split=split)
        pairs = pair_images_and_masks(
            find_images(self.root, image_location),
            find_images(self.root, mask_location),
            mask_suffix,
        )
        if fractions is not None:
            keep = split_by_fraction(len(pairs), split, fractions, seed)
            pairs = [pairs[i] for i in keep]
        if not pairs:
            raise FileNotFoundError(
                f"folder dataset split {split!r} is empty: no image under "
                f"{self.root / image_location} with its mask under {self.root / mask_location}"
                + (f" (fractions={dict(fractions)})" if fractions is not None else "")
            )
        lossy = [mask for _, mask in pairs if mask.suffix.lower() in LOSSY_MASK_SUFFIXES]
        if lossy and allow_lossy_masks is not True:
            raise ValueError(
                f"folder dataset split {split!r}: {len(lossy)} of {len(pairs)} masks are JPEG "
                f"files (first: {lossy[0]}); lossy compression changes class ids. Save masks "
                "as PNG, or set dataset.source.allow_lossy_masks=true to use them anyway"
            )
        self.pairs = pairs
        self.label_map = self._lookup_table(label_map)

    @staticmethod
    def _lookup_table(label_map: Mapping[int, int] | None) -> np.ndarray | None:
        if label_map is None:
            return None
        table = np.full(65536, -1, dtype=np.int64)
        for raw, label in label_map.items():
            if not 0 <= int(raw) < table.size or not 0 <= int(label) <= 255:
                raise ValueError(
                    f"dataset.source.label_map maps raw values in [0, 65535] to ids in "
                    f"[0, 255]; found {raw}: {label}"
                )
            table[int(raw)] = int(label)
        return table

    def __len__(self) -> int:
        return len(self.pairs)

    def fingerprint(self) -> dict:
        """What the split's labels depend on: its files and the label map."""
        files = files_fingerprint(p for pair in self.pairs for p in pair)
        table = b"" if self.label_map is None else self.label_map.tobytes()
        return {"source": "folder", "files": files, "label_map": hashlib.sha256(table).hexdigest()}

    def stem(self, index: int) -> str:
        return self.pairs[index][0].stem

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image, mask = read_rgb(image_path), read_label_map(mask_path)
        if self.label_map is not None:
            inside = (mask >= 0) & (mask < self.label_map.size)
            mapped = np.where(inside, self.label_map[np.where(inside, mask, 0)], -1)
            if (mapped < 0).any():
                raise SampleError(
                    f"{mask_path}: mask values {np.unique(mask[mapped < 0]).tolist()[:10]} "
                    "are not keys of dataset.source.label_map"
                )
            mask = mapped
        # cv2-based augmentation needs a narrow dtype; ids above 255 are left for
        # SegmentationDataset's class-set check to report.
        if mask.size and 0 <= mask.min() and mask.max() <= 255:
            mask = mask.astype(np.uint8)
        return image, mask

    def describe(self, index: int) -> str:
        image_path, mask_path = self.pairs[index]
        return f"folder[{self.split}][{self.stem(index)}] (image {image_path}, mask {mask_path})"

    def write_prediction(
        self, index: int, train_ids: np.ndarray, out_dir: str | os.PathLike
    ) -> Path:
        """Write a predicted class-id map as ``out_dir/{stem}.png`` (8-bit, the mask's size)."""
        out = Path(out_dir) / f"{self.stem(index)}.png"
        return write_label_map(out, train_ids, size=image_size(self.pairs[index][1]))
