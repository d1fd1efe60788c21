"""LightningDataModule over any sample source, split by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from cheeger.data.classes import IGNORE_INDEX, check_palette
from cheeger.data.dataset import IMAGENET_MEAN, IMAGENET_STD, SegmentationDataset
from cheeger.data.transforms import eval_transform, train_transform

SPLITS = ("train", "val", "test")


class SegmentationDataModule(L.LightningDataModule):
    """Datasets and loaders for the train/val/test splits of one source.

    Args:
        source: callable ``source(split=...) -> SampleSource`` (a Hydra partial).
        num_classes: label-space size; every mask is checked against it.
        name: dataset name used in logs and tables.
        class_names: names of the classes, for tables and panels.
        root: the data folder, handed to the source as ``source(split=..., root=root)``;
            None calls the source without it (sources that need no files, or that
            have their own default).
        palette: one RGB colour (0..255) per class for pictures; None: the
            Cityscapes colours for 19 classes, generated distinct colours otherwise.
        batch_size: training batch size; ``eval_batch_size`` for val/test
            (defaults to ``batch_size``).
        num_workers: DataLoader workers (0 = in the main process).
        train_transform: keyword arguments of ``cheeger.data.transforms.train_transform``.
        eval_size: optional (height, width) to resize val/test samples to.
        mean, std: image normalisation.
        ignore_index: label never counted.
    """

    def __init__(
        self,
        source: Callable[..., Any],
        num_classes: int,
        name: str = "dataset",
        class_names: Sequence[str] | None = None,
        root: str | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        train_transform: Mapping[str, Any] | None = None,
        eval_size: Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, found {batch_size}")
        if num_workers < 0:
            raise ValueError(f"dataset.num_workers must be >= 0, found {num_workers}")
        self.source = source
        self.num_classes = num_classes
        self.name = name
        self.class_names = (
            list(class_names) if class_names else [str(c) for c in range(num_classes)]
        )
        if len(self.class_names) != num_classes:
            raise ValueError(
                f"dataset.class_names has {len(self.class_names)} entries, "
                f"expected num_classes={num_classes}"
            )
        self.root = root
        self.palette = check_palette(palette, num_classes) if palette is not None else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_transform_args = dict(train_transform or {})
        self.eval_size = eval_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.pin_memory = pin_memory
        self.datasets: dict[str, SegmentationDataset] = {}

    def dataset(self, split: str) -> SegmentationDataset:
        """The (cached) dataset of one split: train, val or test."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
        if split not in self.datasets:
            transform = (
                train_transform(ignore_index=self.ignore_index, **self.train_transform_args)
                if split == "train"
                else eval_transform(self.eval_size)
            )
            located = {} if self.root is None else {"root": self.root}
            self.datasets[split] = SegmentationDataset(
                self.source(split=split, **located),
                num_classes=self.num_classes,
                transform=transform,
                mean=self.mean,
                std=self.std,
                ignore_index=self.ignore_index,
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage or "", SPLITS):
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=split == "train" and len(self.dataset(split)) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
