"""Label statistics of a dataset split: the per-class pixel histogram, its checks, and
class-balanced loss weights derived from it.

``label_histogram`` reads every sample of a split once (validated, as training will
see them) and counts pixels per class and ignored pixels. ``check_histograms`` turns
the counts into the start-of-run checks that stop labels which would otherwise score
a perfect mIoU for a model that learned nothing (0/255 binary masks: every
foreground pixel is the ignore label, the foreground class never occurs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cheeger.data.classes import IGNORE_INDEX
from cheeger.data.dataset import SampleError

log = logging.getLogger("cheeger.data")

# A split whose ignored share of pixels is above this gets a warning.
MAX_IGNORED_SHARE = 0.5
# Bump when the cached content or its meaning changes.
CACHE_VERSION = 1


@dataclass(frozen=True)
class LabelHistogram:
    """Pixel counts of one split.

    Attributes:
        counts: (C,) labelled pixels per class.
        ignored: pixels holding the ignore label.
        samples: samples counted.
        skipped: descriptions of bad samples left out (``skip_bad``).
    """

    counts: tuple[int, ...]
    ignored: int
    samples: int
    skipped: tuple[str, ...] = ()

    @property
    def pixels(self) -> int:
        return sum(self.counts) + self.ignored

    @property
    def ignored_share(self) -> float:
        return self.ignored / self.pixels if self.pixels else 0.0

    def counts_tensor(self) -> Tensor:
        return torch.tensor(self.counts, dtype=torch.int64)

    def to_json(self) -> dict:
        return {
            "counts": list(self.counts),
            "ignored": self.ignored,
            "samples": self.samples,
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> LabelHistogram:
        return cls(
            tuple(int(c) for c in data["counts"]),
            int(data["ignored"]),
            int(data["samples"]),
            tuple(str(s) for s in data.get("skipped", ())),
        )


class _SampleCounts(Dataset):
    """Per-sample (class counts, ignored) or the error text of a bad sample."""

    def __init__(self, dataset, num_classes: int, ignore_index: int) -> None:
        self.dataset, self.num_classes, self.ignore_index = dataset, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int] | str:
        try:
            _, mask = self.dataset.raw(index)
        except SampleError as error:  # raised (or listed) by the reading process
            return str(error)
        ignored = mask == self.ignore_index
        labels = mask[~ignored].astype(np.int64)
        return np.bincount(labels, minlength=self.num_classes)[: self.num_classes], int(
            ignored.sum()
        )


def label_histogram(
    dataset,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    num_workers: int = 0,
    desc: str = "label histogram",
    skip_bad: bool = False,
) -> LabelHistogram:
    """Count the pixels of every sample of ``dataset`` by class (one pass, a progress bar).

    ``dataset`` needs ``__len__`` and ``raw(i) -> (image, mask)`` (validated and
    untransformed, as ``SegmentationDataset`` provides). Samples are read in
    ``num_workers`` processes (0: this one).

    Raises:
        ValueError: the dataset is empty.
        SampleError: the first bad sample, naming it, unless ``skip_bad`` (the dataset's
            ``dataset.skip_bad``) is true: bad samples are then left out and listed in
            ``skipped``.
    """
    if len(dataset) == 0:
        raise ValueError(f"{desc}: the split has no sample")
    loader = DataLoader(
        _SampleCounts(dataset, num_classes, ignore_index),
        batch_size=None,
        num_workers=num_workers,
        # Its own generator: starting the loader draws a seed, which must not come from
        # the global RNG (a run seeded, then resumed, replays that stream exactly).
        generator=torch.Generator().manual_seed(0),
    )
    counts = np.zeros(num_classes, dtype=np.int64)
    ignored, samples, skipped = 0, 0, []
    bar = tqdm(loader, desc=desc, unit="sample", leave=False, mininterval=1.0, disable=None)
    for item in bar:  # disable=None: no bar when stderr is no terminal (batch logs)
        if isinstance(item, str):
            if not skip_bad:
                raise SampleError(item)
            skipped.append(item)
            continue
        sample_counts, sample_ignored = item
        counts += np.asarray(sample_counts, dtype=np.int64)
        ignored += int(sample_ignored)
        samples += 1
    return LabelHistogram(tuple(int(c) for c in counts), ignored, samples, tuple(skipped))


# ------------------------------------------------------------------ disk cache
def cache_path(cache_dir: str | os.PathLike, key: Mapping) -> Path:
    """File of the cached histogram for ``key`` (JSON-able: what the counts depend on)."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return Path(cache_dir).expanduser() / f"{digest}.json"


def read_cached(path: Path) -> LabelHistogram | None:
    """The histogram stored at ``path``; None when absent or unreadable (then recounted)."""
    try:
        return LabelHistogram.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_cached(path: Path, histogram: LabelHistogram) -> None:
    """Store atomically (write a temporary file, then rename); a failure only logs."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(histogram.to_json()))
        os.replace(partial, path)
    except OSError as error:
        log.warning("could not cache the label histogram in %s (%s)", path, error)


# ---------------------------------------------------------------------- checks
def check_histograms(
    histograms: Mapping[str, LabelHistogram],
    class_names: Sequence[str],
    ignore_index: int = IGNORE_INDEX,
    expected_classes: Sequence[int] | None = None,
    allow_absent_classes: bool = False,
) -> list[str]:
    """Check split histograms at the start of a run; returns the warnings (also logged).

    * A class with no pixel in the ``train`` split is an error (the model can never
      learn it, and a mean over the classes that occur reads as a perfect score),
      unless ``allow_absent_classes``. Classes outside ``expected_classes`` (what the
      source can produce, e.g. the synthetic city's classes) are not required.
    * A split where the ignore label covers more than half the pixels is a warning.

    Raises:
        ValueError: naming the absent classes and the keys that fix or allow them.
    """
    train = histograms.get("train")
    if train is not None:
        wanted = range(len(class_names)) if expected_classes is None else expected_classes
        absent = [c for c in wanted if train.counts[c] == 0]
        if absent and not allow_absent_classes:
            named = ", ".join(f"{class_names[c]!r} (id {c})" for c in absent)
            raise ValueError(
                f"dataset: {len(absent)} declared class(es) have no pixel in the "
                f"{train.samples} training samples: {named}. The model cannot learn them, "
                f"and a mean over the classes that do occur can read 1.0. "
                f"{_ignore_hint(train, ignore_index)}Check dataset.num_classes and the "
                "masks, or set dataset.allow_absent_classes=true to train anyway."
            )
    warnings = []
    for split, histogram in histograms.items():
        if histogram.ignored_share > MAX_IGNORED_SHARE:
            warnings.append(
                f"dataset split {split!r}: {histogram.ignored_share:.0%} of the pixels hold "
                f"the ignore label {ignore_index} and are never scored. "
                + _ignore_hint(histogram, ignore_index)
            )
    for text in warnings:
        log.warning(text)
    return warnings


def _ignore_hint(histogram: LabelHistogram, ignore_index: int) -> str:
    if histogram.ignored == 0:
        return ""
    return (
        f"Masks saved as 0/255 store the foreground as {ignore_index}: map it with "
        f"dataset.source.label_map (e.g. {{0: 0, {ignore_index}: 1}}). "
    )


def median_frequency_weights(counts: Tensor, max_weight: float = 10.0) -> Tensor:
    """Median-frequency balancing (Eigen & Fergus 2015): w_c = median_f / f_c, (C,) float32.

    f_c is class c's share of the counted pixels; the median runs over classes that
    occur. Weights are capped at ``max_weight`` so that a class seen in a handful of
    pixels cannot dominate. A class that never occurs has no frequency: it gets the
    cap (the weight of the rarest possible class), never a silent 1.0, and a warning
    names it.
    """
    counts = counts.double()
    present = counts > 0
    if not bool(present.any()):
        raise ValueError("counts are all zero: no labelled pixel to balance")
    freq = counts / counts.sum()
    median = freq[present].median()
    weights = torch.where(present, median / freq.clamp_min(1e-300), max_weight)
    absent = (~present).nonzero().flatten().tolist()
    if absent:
        log.warning(
            "median-frequency weights: classes %s have no pixel in the counted split; they "
            "get the cap %s",
            absent,
            max_weight,
        )
    return weights.clamp(max=max_weight).float()
