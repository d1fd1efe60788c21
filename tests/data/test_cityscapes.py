"""Cityscapes source on a miniature tree: pairing, 34 -> 19 mapping, errors, augmentation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from cheeger.data.cityscapes import (
    HOW_TO_GET,
    LABELS,
    Cityscapes,
    to_label_ids,
    to_train_ids,
)
from cheeger.data.classes import CITYSCAPES_CLASSES
from cheeger.data.dataset import SampleError
from tests.conftest import compose
from tests.data.mini_cityscapes import FRAMES, HEIGHT, IGNORED_IDS, WIDTH

# The benchmark's 19 classes by label id, written out independently of the code's table.
EVALUATED = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def test_label_table_matches_the_official_one():
    from cityscapesscripts.helpers.labels import labels as official

    ours = {label.id: label for label in LABELS}
    official = {label.id: label for label in official if label.id >= 0}
    assert sorted(ours) == sorted(official) == list(range(34))
    for label_id, label in official.items():
        assert ours[label_id].name == label.name
        assert ours[label_id].color == label.color
        assert ours[label_id].train_id == label.trainId  # 255 where ignoreInEval
        assert (label.trainId == 255) == label.ignoreInEval


def test_label_table_agrees_with_the_train_id_classes():
    by_train_id = {label.train_id: label for label in LABELS if label.train_id != 255}
    for seg_class in CITYSCAPES_CLASSES:
        label = by_train_id[seg_class.train_id]
        assert (label.name, label.color) == (seg_class.name, seg_class.color)


def test_mapping_both_ways():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    train = to_train_ids(ids)
    expected = np.array([EVALUATED.get(i, 255) for i in range(34)]).reshape(2, 17)
    np.testing.assert_array_equal(train, expected)
    assert train.dtype == np.uint8
    # back: evaluated ids survive, ignored ones become 0 ("unlabeled")
    back = to_label_ids(train)
    np.testing.assert_array_equal(back, np.where(expected == 255, 0, ids))
    with pytest.raises(ValueError, match=r"label ids holds values \[34, 200\]"):
        to_train_ids(np.array([[7, 34, 200]]))
    with pytest.raises(ValueError, match=r"train ids holds values \[19\]"):
        to_label_ids(np.array([18, 19]))


def test_loads_the_miniature_tree(mini_cityscapes):
    counts = {split: sum(n for s, _, n in FRAMES if s == split) for split in ("train", "val")}
    for split, count in counts.items():
        source = Cityscapes(mini_cityscapes, split)
        assert len(source) == count
    source = Cityscapes(mini_cityscapes, "val")
    assert [source.stem(i) for i in range(len(source))] == [
        "alpha_000000_000007",
        "alpha_000001_000026",
        "gamma_000000_000007",
    ]
    assert "cityscapes[val][alpha_000000_000007]" in source.describe(0)
    seen_ignored = False
    for i in range(len(source)):
        image, mask = source.load(i)
        raw = np.asarray(Image.open(source.label_paths[i]))
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
        expected = np.vectorize(lambda v: EVALUATED.get(int(v), 255))(raw)
        np.testing.assert_array_equal(mask, expected)
        seen_ignored |= bool(np.isin(raw, IGNORED_IDS).any())
    assert seen_ignored, "the miniature tree should contain ignored label ids"


def test_root_from_environment(mini_cityscapes, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(mini_cityscapes))
    assert len(Cityscapes(split="val")) == 3


def test_missing_root_says_what_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(FileNotFoundError, match="CITYSCAPES_DATASET is unset") as error:
        Cityscapes(split="val")
    assert HOW_TO_GET in str(error.value)

    (tmp_path / "cityscapes_v2").mkdir()  # a typo in the root: the listing shows it
    missing = tmp_path / "nowhere" / "cityscapes"
    with pytest.raises(FileNotFoundError) as error:
        Cityscapes(missing, "val")
    message = str(error.value)
    assert f"expected the folder {missing / 'leftImg8bit' / 'val'}" in message
    assert f"{missing} does not exist; {tmp_path} holds [cityscapes_v2/]" in message
    assert "cityscapes-dataset.com" in message and "never downloads" in message


def test_incomplete_root_lists_what_was_found(mini_cityscapes):
    shutil.rmtree(mini_cityscapes / "gtFine")
    (mini_cityscapes / "README").write_text("half a download")
    with pytest.raises(FileNotFoundError) as error:
        Cityscapes(mini_cityscapes, "train")
    message = str(error.value)
    assert f"expected the folder {mini_cityscapes / 'gtFine' / 'train'}" in message
    assert f"{mini_cityscapes} holds [README, leftImg8bit/]" in message
    assert HOW_TO_GET in message


def test_missing_partner_is_named(mini_cityscapes):
    label = mini_cityscapes / "gtFine/val/gamma/gamma_000000_000007_gtFine_labelIds.png"
    label.unlink()
    image = mini_cityscapes / "leftImg8bit/val/gamma/gamma_000000_000007_leftImg8bit.png"
    with pytest.raises(SampleError, match=f"{image}: no label file; expected {label}"):
        Cityscapes(mini_cityscapes, "val")
    image.unlink()
    extra = mini_cityscapes / "gtFine/val/gamma/gamma_000009_000001_gtFine_labelIds.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(extra)
    with pytest.raises(SampleError, match=f"{extra}: no image"):
        Cityscapes(mini_cityscapes, "val")


def test_unknown_label_id_is_named(mini_cityscapes):
    source = Cityscapes(mini_cityscapes, "val")
    Image.fromarray(np.full((HEIGHT, WIDTH), 40, np.uint8)).save(source.label_paths[1])
    message = rf"{source.label_paths[1]}: label ids holds values \[40\]"
    with pytest.raises(SampleError, match=message):
        source.load(1)


def test_prediction_file_in_label_ids_at_ground_truth_size(mini_cityscapes, tmp_path):
    source = Cityscapes(mini_cityscapes, "val")
    pred = np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8)  # made at half resolution
    pred[:, WIDTH // 4 :] = 13  # car
    path = source.write_prediction(2, pred, tmp_path / "out")
    assert path == tmp_path / "out" / "gamma" / "gamma_000000_000007_pred_labelIds.png"
    written = Image.open(path)
    assert written.mode == "L" and written.size == (WIDTH, HEIGHT)
    values = np.asarray(written)
    np.testing.assert_array_equal(values[:, : WIDTH // 2], 7)  # road's label id
    np.testing.assert_array_equal(values[:, WIDTH // 2 :], 26)  # car's label id


def test_cityscapes_config_builds_augmented_batches(mini_cityscapes, tmp_path):
    cfg = compose(
        "train",
        [
            "dataset=cityscapes",
            f"dataset.root={mini_cityscapes}",
            "dataset.train_transform.crop=[16,32]",
            "dataset.batch_size=2",
            "dataset.num_workers=0",
        ],
        tmp_path / "run",
    )
    assert cfg.dataset.train_transform.scale == [0.5, 2.0]  # the Cityscapes recipe
    datamodule = instantiate(cfg.dataset)
    for _ in range(3):
        batch = next(iter(datamodule.train_dataloader()))
        assert batch["image"].shape == (2, 3, 16, 32)
        assert set(batch["mask"].unique().tolist()) <= set(EVALUATED.values()) | {255}
    val = next(iter(datamodule.val_dataloader()))
    assert val["image"].shape == (1, 3, HEIGHT, WIDTH)  # full resolution, one at a time


def test_default_root_is_the_environment_variable(mini_cityscapes, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(mini_cityscapes))
    cfg = compose("train", ["dataset=cityscapes"], tmp_path / "run")
    assert cfg.dataset.root == str(mini_cityscapes)
    assert len(instantiate(cfg.dataset).dataset("val")) == 3
