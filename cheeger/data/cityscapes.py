"""Cityscapes (fine annotations) as a sample source, and its prediction format.

Layout of a Cityscapes download (``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` unzipped into one folder, the ``root``)::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Images and label files are paired by their shared stem ``{city}_{seq}_{frame}``.
The label files hold the 34 Cityscapes *label ids*; the 19 evaluated classes
are renumbered to *train ids* 0..18 (cheeger's label space,
``cheeger.data.classes``) and every other id becomes ``IGNORE_INDEX``.
Predictions are written back in label ids (``{stem}_pred_labelIds.png``), which
is what the official ``cityscapesscripts`` evaluator reads.

cheeger never downloads the dataset: it needs a registration at the Cityscapes
website.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cheeger.data.classes import IGNORE_INDEX
from cheeger.data.dataset import SampleError, SampleSource
from cheeger.data.image_io import (
    files_fingerprint,
    image_size,
    read_label_map,
    read_rgb,
    write_label_map,
)

ROOT_ENV = "CITYSCAPES_DATASET"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
PREDICTION_SUFFIX = "_pred_labelIds.png"

HOW_TO_GET = (
    "cheeger never downloads Cityscapes (it needs a registration): create an account at "
    "https://www.cityscapes-dataset.com, download leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip, unzip both into one folder (it then holds leftImg8bit/ and "
    f"gtFine/) and pass dataset.root=<that folder> or export {ROOT_ENV}=<that folder>"
)


@dataclass(frozen=True)
class CityscapesLabel:
    """One Cityscapes label id: its name, train id (``IGNORE_INDEX`` if not evaluated), colour."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


# The 34 label ids of the Cityscapes annotation protocol, with the train ids of the
# 19 classes of the benchmark (every other id is ignored in training and evaluation).
LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel(0, "unlabeled", IGNORE_INDEX, (0, 0, 0)),
    CityscapesLabel(1, "ego vehicle", IGNORE_INDEX, (0, 0, 0)),
    CityscapesLabel(2, "rectification border", IGNORE_INDEX, (0, 0, 0)),
    CityscapesLabel(3, "out of roi", IGNORE_INDEX, (0, 0, 0)),
    CityscapesLabel(4, "static", IGNORE_INDEX, (0, 0, 0)),
    CityscapesLabel(5, "dynamic", IGNORE_INDEX, (111, 74, 0)),
    CityscapesLabel(6, "ground", IGNORE_INDEX, (81, 0, 81)),
    CityscapesLabel(7, "road", 0, (128, 64, 128)),
    CityscapesLabel(8, "sidewalk", 1, (244, 35, 232)),
    CityscapesLabel(9, "parking", IGNORE_INDEX, (250, 170, 160)),
    CityscapesLabel(10, "rail track", IGNORE_INDEX, (230, 150, 140)),
    CityscapesLabel(11, "building", 2, (70, 70, 70)),
    CityscapesLabel(12, "wall", 3, (102, 102, 156)),
    CityscapesLabel(13, "fence", 4, (190, 153, 153)),
    CityscapesLabel(14, "guard rail", IGNORE_INDEX, (180, 165, 180)),
    CityscapesLabel(15, "bridge", IGNORE_INDEX, (150, 100, 100)),
    CityscapesLabel(16, "tunnel", IGNORE_INDEX, (150, 120, 90)),
    CityscapesLabel(17, "pole", 5, (153, 153, 153)),
    CityscapesLabel(18, "polegroup", IGNORE_INDEX, (153, 153, 153)),
    CityscapesLabel(19, "traffic light", 6, (250, 170, 30)),
    CityscapesLabel(20, "traffic sign", 7, (220, 220, 0)),
    CityscapesLabel(21, "vegetation", 8, (107, 142, 35)),
    CityscapesLabel(22, "terrain", 9, (152, 251, 152)),
    CityscapesLabel(23, "sky", 10, (70, 130, 180)),
    CityscapesLabel(24, "person", 11, (220, 20, 60)),
    CityscapesLabel(25, "rider", 12, (255, 0, 0)),
    CityscapesLabel(26, "car", 13, (0, 0, 142)),
    CityscapesLabel(27, "truck", 14, (0, 0, 70)),
    CityscapesLabel(28, "bus", 15, (0, 60, 100)),
    CityscapesLabel(29, "caravan", IGNORE_INDEX, (0, 0, 90)),
    CityscapesLabel(30, "trailer", IGNORE_INDEX, (0, 0, 110)),
    CityscapesLabel(31, "train", 16, (0, 80, 100)),
    CityscapesLabel(32, "motorcycle", 17, (0, 0, 230)),
    CityscapesLabel(33, "bicycle", 18, (119, 11, 32)),
)
NUM_LABEL_IDS = len(LABELS)
# Where the evaluator has no opinion (train id 255 never comes out of argmax) we write "unlabeled".
UNLABELED_ID = 0


def _lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    to_train = np.full(256, -1, dtype=np.int64)  # -1: not a Cityscapes label id
    to_label = np.full(256, -1, dtype=np.int64)  # -1: not a train id
    for label in LABELS:
        to_train[label.id] = label.train_id
        if label.train_id != IGNORE_INDEX:
            to_label[label.train_id] = label.id
    to_label[IGNORE_INDEX] = UNLABELED_ID
    return to_train, to_label


_TO_TRAIN_ID, _TO_LABEL_ID = _lookup_tables()


def _lookup(values: np.ndarray, table: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what} must be an integer array, found dtype {values.dtype}")
    inside = (values >= 0) & (values < table.size)
    mapped = np.where(inside, table[np.where(inside, values, 0)], -1)
    if (mapped < 0).any():
        bad = np.unique(values[mapped < 0])
        raise ValueError(f"{what} holds values {bad.tolist()[:10]} with no Cityscapes mapping")
    return mapped.astype(np.uint8)


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (0..33) -> train ids (0..18, or 255 where not evaluated), uint8.

    Raises:
        ValueError: a value that is not a Cityscapes label id.
    """
    return _lookup(label_ids, _TO_TRAIN_ID, "label ids")


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids (0..18; 255 -> 0 "unlabeled") -> Cityscapes label ids, uint8.

    Raises:
        ValueError: a value that is neither a train id nor 255.
    """
    return _lookup(train_ids, _TO_LABEL_ID, "train ids")


def _found(path: Path) -> str:
    """What is at ``path`` (or, if it is missing, at its nearest existing ancestor)."""
    if not path.exists():
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        return f"{path} does not exist; {_found(ancestor)}"
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "")
    return f"{path} holds [{shown}]" if entries else f"{path} is empty"


def _missing(root: Path, expected: str, found: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Cityscapes not found at dataset.root={str(root)!r}: expected {expected}; "
        f"found: {found}. {HOW_TO_GET}"
    )


class Cityscapes(SampleSource):
    """Fine-annotated Cityscapes images of one split, with masks in train ids.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``; None reads the
            ``CITYSCAPES_DATASET`` environment variable (the cityscapesScripts convention).
        split: train | val | test (the test split's public labels are all "unlabeled",
            so its mIoU is undefined; use it for exporting predictions).

    Raises:
        FileNotFoundError: the root is unset, missing or incomplete (the message says
            which folder was expected, what was found and how to obtain the data).
        SampleError: an image without its label file or a label file without its image.

    ``load(i)`` returns an RGB (H, W, 3) uint8 image and an (H, W) uint8 train-id mask.
    """

    writes_predictions = True

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"Cityscapes split must be one of {SPLITS}, found {split!r}")
        if root is None:
            root = os.environ.get(ROOT_ENV)
        if not root:
            raise FileNotFoundError(
                f"Cityscapes root is not set: dataset.root is null and ${ROOT_ENV} is unset. "
                f"{HOW_TO_GET}"
            )
        self.root = Path(root).expanduser()
        self.split = split
        self.image_paths, self.label_paths = self._pair_files()

    def _pair_files(self) -> tuple[list[Path], list[Path]]:
        image_dir = self.root / "leftImg8bit" / self.split
        label_dir = self.root / "gtFine" / self.split
        for directory in (image_dir, label_dir):
            if not directory.is_dir():
                found = _found(directory if self.root.exists() else self.root)
                raise _missing(self.root, f"the folder {directory}", found)
        images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
        labels = {p.name[: -len(LABEL_SUFFIX)]: p for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
        if not images:
            raise _missing(
                self.root, f"{image_dir}/<city>/*{IMAGE_SUFFIX} images", _found(image_dir)
            )
        for stem, path in sorted(images.items()):
            if stem not in labels:
                raise SampleError(
                    f"{path}: no label file; expected "
                    f"{label_dir / path.parent.name / (stem + LABEL_SUFFIX)}"
                )
        for stem, path in sorted(labels.items()):
            if stem not in images:
                raise SampleError(
                    f"{path}: no image; expected "
                    f"{image_dir / path.parent.name / (stem + IMAGE_SUFFIX)}"
                )
        stems = sorted(images)
        return [images[s] for s in stems], [labels[s] for s in stems]

    def __len__(self) -> int:
        return len(self.image_paths)

    def fingerprint(self) -> dict:
        """What the split's labels depend on: its files."""
        files = files_fingerprint([*self.image_paths, *self.label_paths])
        return {"source": "cityscapes", "files": files}

    def stem(self, index: int) -> str:
        """``{city}_{seq}_{frame}`` of sample ``index``."""
        return self.image_paths[index].name[: -len(IMAGE_SUFFIX)]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.image_paths[index])
        label_path = self.label_paths[index]
        label_ids = read_label_map(label_path)
        try:
            mask = to_train_ids(label_ids)
        except ValueError as error:
            raise SampleError(f"{label_path}: {error}") from error
        return image, mask

    def describe(self, index: int) -> str:
        return f"cityscapes[{self.split}][{self.stem(index)}] ({self.image_paths[index]})"

    def write_prediction(
        self, index: int, train_ids: np.ndarray, out_dir: str | os.PathLike
    ) -> Path:
        """Write a predicted (h, w) train-id map of sample ``index`` as label ids.

        The file is ``out_dir/{city}/{stem}_pred_labelIds.png`` at the size of the
        ground-truth file (a prediction made at another resolution, e.g. with
        ``dataset.eval_size``, is resized with nearest neighbour), the form the
        official evaluator matches to ``{stem}_gtFine_labelIds.png``.
        """
        label_path = self.label_paths[index]
        out = Path(out_dir) / label_path.parent.name / f"{self.stem(index)}{PREDICTION_SUFFIX}"
        return write_label_map(out, to_label_ids(train_ids), size=image_size(label_path))
