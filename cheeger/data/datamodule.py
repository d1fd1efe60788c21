"""LightningDataModule over any sample source, split by name.

The training order is resumable: the loader draws from a ``ResumableSampler``
(order and augmentation a function of seed, epoch and index), and the module's
``state_dict`` -- stored in every checkpoint -- records the seed and where the
next training batch comes from (epoch, batches of it already consumed), read
from Lightning's loop progress. A run resumed from a checkpoint taken part-way
through an epoch therefore continues with the very batches the interrupted run
would have drawn, instead of restarting the epoch with a new shuffle.
"""

from __future__ import annotations

import logging
import math
import secrets
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Sampler

from cheeger.data.classes import IGNORE_INDEX, check_palette
from cheeger.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    check_normalization,
)
from cheeger.data.sampling import EvalShardSampler, ResumableSampler
from cheeger.data.skipping import collate_skipping
from cheeger.data.statistics import (
    LabelHistogram,
    cache_path,
    check_histograms,
    label_histogram,
    read_cached,
    write_cached,
)
from cheeger.data.transforms import eval_transform, train_transform
from cheeger.ops.checks import check_bool, check_int

SPLITS = ("train", "val", "test")

log = logging.getLogger("cheeger.data")


def init_worker(worker_id: int) -> None:
    """DataLoader worker start: ignore SIGTERM, then seed like Lightning's workers.

    Schedulers often signal the whole process group. Workers that died of it first
    made the main process fail on "DataLoader worker killed" instead of finishing its
    batch and saving ``last.ckpt``; they now leave on the main process's shutdown (or
    when it dies: torch's workers watch their parent).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


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
        seed: seed (an int >= 0) of the training order and augmentation
            (``cheeger.train`` passes the run's ``seed``, which the config schema checks);
            None draws one, which checkpoints keep for resuming.
        skip_bad: leave samples with bad data (unreadable file, wrong mask size, label
            outside the class set) out of their batch instead of stopping; the module
            counts them (``{stage}/skipped_samples``) and lists them at each epoch end.
            False: the first bad sample stops the run with an error naming it.
        allow_absent_classes: train although a declared class has no pixel in the
            training split (``check_labels``); False: that is an error naming the class.
        stats_cache: folder caching each split's label histogram, keyed by the source's
            ``fingerprint()`` (its files' paths, sizes and modification times), so a
            sweep counts a dataset once; None: counted in every run.
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
        seed: int | None = None,
        skip_bad: bool = False,
        allow_absent_classes: bool = False,
        stats_cache: str | None = None,
    ) -> None:
        super().__init__()
        batch_size = check_int("dataset.batch_size", batch_size, 1)
        if eval_batch_size is not None:
            eval_batch_size = check_int("dataset.eval_batch_size", eval_batch_size, 1)
        num_workers = check_int("dataset.num_workers", num_workers, 0)
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
        self.mean, self.std = check_normalization(mean, std)
        self.ignore_index = ignore_index
        self.pin_memory = pin_memory
        self.skip_bad = skip_bad
        self.allow_absent_classes = check_bool("dataset.allow_absent_classes", allow_absent_classes)
        self.stats_cache = stats_cache
        self.datasets: dict[str, SegmentationDataset] = {}
        self.histograms: dict[str, LabelHistogram] = {}
        self.seed = secrets.randbits(31) if seed is None else seed
        # Where the next training loader starts: (epoch, batches of it already consumed).
        self.resume_position = (0, 0)

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
                skip_bad=self.skip_bad,
            )
        return self.datasets[split]

    def label_histogram(self, split: str) -> LabelHistogram:
        """Pixels per class of a whole split, counted once (cached in memory, and on disk
        under ``stats_cache`` for sources with a ``fingerprint()``)."""
        if split in self.histograms:
            return self.histograms[split]
        dataset = self.dataset(split)
        fingerprint = dataset.source.fingerprint() if self.stats_cache else None
        path = None
        if fingerprint is not None:
            key = {
                "source": fingerprint,
                "num_classes": self.num_classes,
                "ignore_index": self.ignore_index,
                "skip_bad": self.skip_bad,
            }
            path = cache_path(self.stats_cache, key)
        histogram = read_cached(path) if path is not None else None
        if histogram is None:
            histogram = label_histogram(
                dataset,
                self.num_classes,
                self.ignore_index,
                num_workers=self.num_workers,
                desc=f"checking {self.name} {split} labels",
                skip_bad=self.skip_bad,
            )
            if path is not None:
                write_cached(path, histogram)
        if histogram.skipped:
            listed = "; ".join(histogram.skipped[:5])
            more = len(histogram.skipped) - 5
            log.warning(
                "%s %s: %d bad sample(s) will be skipped (dataset.skip_bad=true): %s%s",
                self.name,
                split,
                len(histogram.skipped),
                listed,
                f"; and {more} more" if more > 0 else "",
            )
        self.histograms[split] = histogram
        return histogram

    def check_labels(self, splits: Sequence[str] = SPLITS) -> list[str]:
        """Read every sample of ``splits`` now, so a bad file fails the run at start and
        not after training, and check their label histograms
        (``cheeger.data.statistics.check_histograms``); returns the warnings.

        Raises:
            SampleError: the first bad sample (unless ``skip_bad``), naming it.
            ValueError: a declared class absent from the training split (unless
                ``allow_absent_classes``).
        """
        histograms = {split: self.label_histogram(split) for split in splits}
        expected = None
        if "train" in splits:
            expected = self.dataset("train").source.present_train_ids
        return check_histograms(
            histograms,
            self.class_names,
            self.ignore_index,
            expected_classes=expected,
            allow_absent_classes=self.allow_absent_classes,
        )

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage or "", SPLITS):
            self.dataset(split)

    def _loader(self, split: str, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=sampler,
            drop_last=split == "train" and len(self.dataset(split)) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            # Bad samples arrive as markers: batch the good ones, list the markers.
            collate_fn=collate_skipping if self.skip_bad else None,
            # Its own generator: creating an iterator then never draws from the global
            # RNG, whose stream (dropout) a resumed run restores from the checkpoint.
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=init_worker if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        epoch, done = self.resume_position
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        dataset = self.dataset("train")
        share = math.ceil(len(dataset) / world)  # this rank's samples per epoch
        sampler = ResumableSampler(
            dataset,
            self.seed,
            num_replicas=world,
            rank=rank,
            epoch=epoch,
            start=min(done * self.batch_size, share),
        )
        return self._loader("train", sampler)

    def _eval_loader(self, split: str) -> DataLoader:
        # Under data parallelism each rank evaluates its own unpadded shard, so every
        # sample is counted once in the summed metric states (EvalShardSampler).
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if world == 1:
            return self._loader(split)
        return self._loader(split, EvalShardSampler(self.dataset(split), world, rank))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ---------------------------------------------------------------- resuming
    def next_training_position(self) -> tuple[int, int]:
        """(epoch, batches of it consumed) of the next training batch, from the trainer's
        loop progress; ``resume_position`` when no trainer is fitting."""
        trainer = self.trainer
        if trainer is None or trainer.num_training_batches in (0, float("inf")):
            return self.resume_position
        epochs = trainer.fit_loop.epoch_progress.current
        if epochs.processed >= epochs.started:  # between two epochs
            return epochs.processed, 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        if done >= trainer.num_training_batches:  # last batch drawn, epoch not closed yet
            return epochs.processed + 1, 0
        return epochs.processed, done

    def state_dict(self) -> dict[str, Any]:
        epoch, done = self.next_training_position()
        return {"seed": self.seed, "epoch": epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"seed", "epoch", "batches_done"} - set(state_dict)
        if missing:
            raise KeyError(
                f"checkpoint entry SegmentationDataModule lacks {sorted(missing)}; found "
                f"{sorted(state_dict)}"
            )
        self.seed = int(state_dict["seed"])
        self.resume_position = (int(state_dict["epoch"]), int(state_dict["batches_done"]))
