"""Label statistics of a dataset split, e.g. for class-balanced losses."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cheeger.data.classes import IGNORE_INDEX
from cheeger.data.dataset import SampleError


def class_pixel_counts(
    dataset, num_classes: int, max_samples: int = 64, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Pixel count per class over up to ``max_samples`` evenly spaced samples, (C,) int64.

    ``dataset`` needs ``__len__`` and ``raw(i) -> (image, mask)`` (validated and
    untransformed, as ``SegmentationDataset`` provides). Ignored pixels are not counted.
    Bad samples (``SampleError``) are left out when ``dataset.skip_bad`` is true.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, found {max_samples}")
    if len(dataset) == 0:
        raise ValueError("cannot count classes of an empty dataset")
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(max_samples, len(dataset))).round())
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in indices.astype(int):
        try:
            _, mask = dataset.raw(int(i))
        except SampleError:
            if not getattr(dataset, "skip_bad", False):
                raise
            continue
        labels = mask[mask != ignore_index].astype(np.int64)
        counts += np.bincount(labels, minlength=num_classes)[:num_classes]
    return torch.from_numpy(counts)


def median_frequency_weights(counts: Tensor, max_weight: float = 10.0) -> Tensor:
    """Median-frequency balancing (Eigen & Fergus 2015): w_c = median_f / f_c, (C,) float32.

    f_c is class c's share of the counted pixels; the median runs over classes
    that occur. Classes that never occur get weight 1 (they contribute no pixels
    to the loss anyway); weights are capped at ``max_weight`` so that a class
    seen in a handful of pixels cannot dominate.
    """
    counts = counts.double()
    present = counts > 0
    if not bool(present.any()):
        raise ValueError("counts are all zero: no labelled pixel to balance")
    freq = counts / counts.sum()
    median = freq[present].median()
    weights = torch.where(present, median / freq.clamp_min(1e-300), torch.ones_like(freq))
    return weights.clamp(max=max_weight).float()
