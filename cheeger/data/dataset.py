"""Turn a raw sample source into validated, transformed training tensors.

A *source* is any object with ``__len__``, ``load(i) -> (image, mask)`` and
``describe(i) -> str`` (``SyntheticCity``, later Cityscapes and image folders).
``SegmentationDataset`` checks every sample it hands out, because a wrong label
or a NaN pixel otherwise turns into a silently wrong metric:

* image (H, W, 3), uint8 or finite float; mask (H, W) of the same size;
* mask values are class ids in [0, num_classes) or ``ignore_index``.

Errors name the sample (``source.describe(i)``) and what was expected. With
``skip_bad`` a sample whose data break the contract is handed out as a
``SkippedSample`` marker instead (``cheeger.data.skipping``); any other error
(a bug, a bad transform) still raises.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cheeger.data.classes import IGNORE_INDEX
from cheeger.data.skipping import SkippedSample
from cheeger.ops.checks import check_bool


class SampleSource:
    """Base class of the sample sources (``SyntheticCity``, ``Cityscapes``, ``FolderSource``).

    A source implements ``__len__``, ``load(index) -> (image (H, W, 3), mask (H, W))``
    and ``describe(index) -> str`` (names the sample in errors), and declares what the
    datamodule and the callbacks may ask of it; the defaults say "not available":

    * ``present_train_ids``: the classes its training split is known to hold (None:
      every class is expected);
    * ``fingerprint() -> dict | None``: what the split's labels depend on, the key of the
      on-disk label-statistics cache (None: no cache);
    * ``writes_predictions`` and ``write_prediction(index, pred, out_dir) -> Path``: a
      prediction file format (PredictionExport writes nothing for other sources).
    """

    present_train_ids: tuple[int, ...] | None = None
    writes_predictions: bool = False

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must implement load")

    def describe(self, index: int) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement describe")

    def fingerprint(self) -> dict | None:
        return None

    def write_prediction(self, index: int, pred: np.ndarray, out_dir: str | Path) -> Path:
        raise NotImplementedError(
            f"{type(self).__name__} has no prediction file format (writes_predictions=False)"
        )


class SampleError(ValueError):
    """A sample that breaks the dataset contract (names the sample)."""


def check_sample(
    image: np.ndarray,
    mask: np.ndarray,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    where: str = "sample",
) -> None:
    """Raise ``SampleError`` naming ``where`` if the pair breaks the contract."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise SampleError(f"{where}: image must be (H, W, 3), found shape {image.shape}")
    if mask.ndim != 2:
        raise SampleError(f"{where}: mask must be (H, W), found shape {mask.shape}")
    if image.shape[:2] != mask.shape:
        raise SampleError(
            f"{where}: image size {image.shape[:2]} does not match mask size {mask.shape}"
        )
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise SampleError(f"{where}: image contains NaN or Inf values")
    elif image.dtype != np.uint8:
        raise SampleError(f"{where}: image dtype must be uint8 or float, found {image.dtype}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise SampleError(f"{where}: mask dtype must be integer, found {mask.dtype}")
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        raise SampleError(
            f"{where}: mask has labels {bad.tolist()[:10]} outside the class set "
            f"0..{num_classes - 1} (and ignore {ignore_index})"
        )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_normalization(
    mean: Sequence[float], std: Sequence[float], prefix: str = "dataset."
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) as float tuples, after checking 3 finite values each and std > 0.

    Raises:
        ValueError: naming ``{prefix}mean`` / ``{prefix}std``, expected and found.
    """
    checked = []
    for key, values, positive in (("mean", mean, False), ("std", std, True)):
        try:
            numbers = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            numbers = ()
        bad = len(numbers) != 3 or not all(np.isfinite(numbers))
        if bad or (positive and min(numbers) <= 0):
            expected = "3 finite numbers" + (" > 0" if positive else "")
            raise ValueError(
                f"{prefix}{key} must be {expected} (one per RGB channel), found {values!r}"
            )
        checked.append(numbers)
    return checked[0], checked[1]


def normalize_image(
    image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """(H, W, 3) image -> (3, H, W) float32, (x / scale - mean) / std per channel.

    uint8 images are 0..255 (scale 255); float images are taken to be in [0, 1].
    """
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    out = (image.astype(np.float32) / scale - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def reseed_transform(transform: Callable, seed: int) -> None:
    """Give an albumentations pipeline one fresh random stream seeded by ``seed``.

    All its transforms share the stream (``set_random_state``), so their draws are
    independent of each other; albumentations' own ``set_random_seed`` would give every
    transform the same seed, and a flip would then always come with a colour jitter.
    """
    set_state = getattr(transform, "set_random_state", None)
    if not callable(set_state):
        raise TypeError(
            "a seeded sample key needs a transform with set_random_state (an albumentations "
            f"Compose); found {type(transform).__name__}"
        )
    set_state(np.random.default_rng(seed), random.Random(seed))


class SegmentationDataset(Dataset):
    """Validated samples as tensors: image (3, H, W) float32 normalised, mask (H, W) int64.

    Args:
        source: the raw sample source.
        num_classes: size of the label space the masks must respect.
        transform: an albumentations-style callable ``transform(image=, mask=) -> dict``
            applied after validation, or None.
        mean, std: per-channel normalisation of the [0, 1]-scaled image.
        ignore_index: label that is never counted.
        skip_bad: a sample raising ``SampleError`` (unreadable file, wrong mask size,
            label outside the class set) becomes a ``SkippedSample`` marker instead of
            stopping the run; batch it with ``cheeger.data.skipping.collate_skipping``.
    """

    def __init__(
        self,
        source: SampleSource,
        num_classes: int,
        transform: Callable | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
        skip_bad: bool = False,
    ) -> None:
        check_bool("dataset.skip_bad", skip_bad)
        if not isinstance(source, SampleSource):
            raise TypeError(
                "dataset.source must build a cheeger.data.dataset.SampleSource "
                f"(len, load, describe), found {type(source).__name__}"
            )
        self.source = source
        self.num_classes = num_classes
        self.transform = transform
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.ignore_index = ignore_index
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.source)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The validated, untransformed (image, mask) pair."""
        image, mask = self.source.load(index)
        check_sample(image, mask, self.num_classes, self.ignore_index, self.source.describe(index))
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict | SkippedSample:
        """The sample ``key`` = index, or (index, seed) to reseed the random transform first.

        With a seed the augmentation is a function of (index, seed) alone, which is what
        makes a resumed run replay it (``cheeger.data.sampling.ResumableSampler``).
        With ``skip_bad`` a bad sample comes back as a ``SkippedSample``.
        """
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            image, mask = self.raw(index)
        except SampleError as error:
            if not self.skip_bad:
                raise
            where = self.source.describe(index)
            return SkippedSample(index, where, str(error).removeprefix(f"{where}: "))
        if self.transform is not None:
            if seed is not None:
                reseed_transform(self.transform, seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(normalize_image(image, self.mean, self.std)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "index": index,
        }
