"""dataset.skip_bad: bad samples are left out of their batch, counted and listed per epoch."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cheeger.data.dataset import SampleError, SegmentationDataset
from cheeger.data.skipping import SkippedSample, collate_skipping, skip_report
from cheeger.eval import evaluate
from cheeger.train import train
from tests.conftest import compose
from tests.data.test_dataset import ListSource, pair
from tests.data.test_folder import write_pair

# The three bad samples of every split of `tree_with_bad_files`, and what is wrong.
BAD = {
    "1": r"cannot read the image file",
    "2": r"image size \(32, 48\) does not match mask size \(30, 48\)",
    "3": r"mask has labels \[77\] outside the class set",
}


def tree_with_bad_files(root: Path) -> Path:
    """train and val splits of 4 pairs each: `{split}_0` is good; `_1` has a truncated
    PNG image, `_2` a mask of the wrong size, `_3` a mask with label 77 (2 classes)."""
    for split in ("train", "val"):
        images, masks = root / "images" / split, root / "masks" / split
        for i in range(4):
            write_pair(images / f"{split}_{i}.png", masks / f"{split}_{i}.png", seed=i)
        truncated = images / f"{split}_1.png"
        data = truncated.read_bytes()
        truncated.write_bytes(data[: len(data) // 2])
        Image.fromarray(np.zeros((30, 48), np.uint8)).save(masks / f"{split}_2.png")
        mask = np.zeros((32, 48), np.uint8)
        mask[5:9, 5:9] = 77
        Image.fromarray(mask).save(masks / f"{split}_3.png")
    return root


def folder_run(tmp_path: Path, *overrides: str):
    root = tree_with_bad_files(tmp_path / "data")
    return compose(
        "train",
        [
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.train_transform.crop=[32,32]",
            # 1 good sample of 4 in batches of 2: at least one training batch is all bad;
            # validation batches hold one sample each, so 3 of its 4 are all bad.
            "dataset.batch_size=2",
            "dataset.eval_batch_size=1",
            "model=unet_tiny",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "test=false",
            *overrides,
        ],
        tmp_path / "run",
    )


def test_collate_batches_the_good_samples_and_lists_the_skipped():
    good = [
        {"image": torch.full((3, 2, 2), float(i)), "mask": torch.zeros(2, 2), "index": i}
        for i in (0, 2)
    ]
    bad = SkippedSample(1, "list[1]", "mask has labels [7]")
    batch = collate_skipping([good[0], bad, good[1]])
    assert batch["image"].shape == (2, 3, 2, 2)
    assert batch["index"].tolist() == [0, 2] and batch["image"][1].max() == 2.0
    assert batch["skipped"] == [bad]
    assert collate_skipping([bad, bad]) == {"skipped": [bad, bad]}


def test_report_names_every_sample_and_reason_in_index_order():
    report = skip_report(
        "val", 3, [SkippedSample(9, "f[9]", "bad size"), SkippedSample(2, "f[2]", "label 77")]
    )
    assert report.splitlines() == [
        "val epoch 3: skipped 2 bad sample(s) (dataset.skip_bad=true):",
        "  f[2]: label 77",
        "  f[9]: bad size",
    ]


def test_dataset_hands_out_a_marker_for_bad_data_only():
    image, mask = pair()
    bad_mask = np.full((8, 12), 7, np.uint8)
    source = ListSource([(image, mask), (image, bad_mask)])
    assert isinstance(SegmentationDataset(source, num_classes=3, skip_bad=True)[0], dict)
    marker = SegmentationDataset(source, num_classes=3, skip_bad=True)[(1, 5)]
    assert marker == SkippedSample(
        1, "list[1]", "mask has labels [7] outside the class set 0..2 (and ignore 255)"
    )
    with pytest.raises(SampleError, match=r"list\[1\]: mask has labels \[7\]"):
        SegmentationDataset(source, num_classes=3)[1]
    with pytest.raises(ValueError, match="dataset.skip_bad must be true or false"):
        SegmentationDataset(source, num_classes=3, skip_bad="yes")


def test_errors_that_are_not_about_the_data_still_raise():
    class BrokenSource(ListSource):
        def load(self, index):
            raise KeyError("a bug in the source")

    def broken_transform(image, mask):
        raise RuntimeError("a bug in the transform")

    with pytest.raises(KeyError, match="a bug in the source"):
        SegmentationDataset(BrokenSource([pair()]), num_classes=3, skip_bad=True)[0]
    dataset = SegmentationDataset(
        ListSource([pair()]), num_classes=3, transform=broken_transform, skip_bad=True
    )
    with pytest.raises(RuntimeError, match="a bug in the transform"):
        dataset[0]


def test_default_stops_at_the_first_bad_file(tmp_path):
    with pytest.raises(SampleError, match=r"images/train/train_1\.png: cannot read"):
        train(folder_run(tmp_path, "dataset.num_workers=0"))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_trains_and_reports_the_bad_files_each_epoch(workers, tmp_path, caplog):
    panel = ["callbacks.panel.every_n_epochs=1"] if workers == 0 else ["callbacks.panel=null"]
    cfg = folder_run(tmp_path, "dataset.skip_bad=true", f"dataset.num_workers={workers}", *panel)
    with caplog.at_level(logging.WARNING, logger="cheeger"):
        _, metrics = train(cfg)
    # Counted over the whole epoch (the sanity check's val batches are not added).
    assert metrics["train/skipped_samples"] == 3.0
    assert metrics["val/skipped_samples"] == 3.0
    assert 0.0 <= metrics["val/mIoU"] <= 1.0  # from the one good val sample
    messages = [r.getMessage() for r in caplog.records if "bad sample(s)" in r.getMessage()]
    # Listed once when the labels are checked at start, then once per stage and epoch.
    at_start = [m for m in messages if "will be skipped" in m]
    assert [m.split(":")[0] for m in at_start] == ["folder train", "folder val"]
    assert all("3 bad sample(s)" in m and "[77]" in m for m in at_start)
    reports = [m for m in messages if m not in at_start]
    assert len(reports) == 2, reports
    for split in ("train", "val"):
        (report,) = [r for r in reports if r.startswith(f"{split} epoch 0: skipped 3 ")]
        lines = report.splitlines()[1:]
        assert len(lines) == 3
        for line, (number, reason) in zip(lines, BAD.items(), strict=True):
            assert re.search(rf"folder\[{split}\]\[{split}_{number}\] .*: .*{reason}", line), line
        assert f"{split}_0" not in report
    if workers > 0:
        return
    # The panel shows the one good val image and leaves the bad ones out.
    assert (tmp_path / "run" / "panels" / "epoch_000.png").is_file()
    # cheeger.eval skips, counts and lists the same files, and exports the good one only.
    cfg = compose(
        "eval",
        [
            "dataset=folder",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.skip_bad=true",
            "dataset.num_workers=0",
            f"ckpt_path={tmp_path / 'run'}",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path / "eval",
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cheeger"):
        evaluated = evaluate(cfg)
    assert evaluated["val/skipped_samples"] == 3.0
    assert any("val epoch 0: skipped 3 " in r.getMessage() for r in caplog.records)
    exported = tmp_path / "eval" / "predictions" / "val"
    assert sorted(p.name for p in exported.iterdir()) == ["val_0.png"]
