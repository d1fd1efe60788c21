"""Folder source: pairing, splits, label maps, named errors, and a fast_dev_run training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from cheeger.data.dataset import SampleError, SegmentationDataset
from cheeger.data.folder import ImageMaskFolder, split_by_fraction
from cheeger.train import train
from tests.conftest import compose


def write_pair(
    image_path: Path, mask_path: Path, size=(32, 48), labels=(0, 1), seed: int = 0
) -> np.ndarray:
    """An image whose colour follows its mask (so a model could learn it); returns the mask."""
    rng = np.random.default_rng(seed)
    mask = np.full(size, labels[0], np.uint8)
    mask[size[0] // 4 : 3 * size[0] // 4, size[1] // 3 :] = labels[-1]
    image = np.where(mask[..., None] == labels[0], 40, 200) + rng.integers(0, 30, (*size, 3))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return mask


def split_tree(root: Path, counts=None) -> Path:
    """root/images/{split}/case_i.jpg.png and root/masks/{split}/case_i.png."""
    for split, count in (counts or {"train": 4, "val": 2, "test": 1}).items():
        for i in range(count):
            write_pair(
                root / "images" / split / f"{split}_{i}.png",
                root / "masks" / split / f"{split}_{i}.png",
                seed=i,
            )
    return root


def test_split_by_subfolder(tmp_path):
    root = split_tree(tmp_path / "data")
    for split, count in (("train", 4), ("val", 2), ("test", 1)):
        source = ImageMaskFolder(root, split)
        assert len(source) == count
        assert all(source.stem(i).startswith(split) for i in range(count))
    source = ImageMaskFolder(root, "val")
    image, mask = source.load(1)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert str(root / "masks/val/val_1.png") in source.describe(1)


def test_hidden_and_appledouble_files_are_skipped(tmp_path):
    root = split_tree(tmp_path / "data", {"train": 2})
    for folder in ("images", "masks"):
        # macOS leaves ._<name> beside every copied file: an image suffix, no image inside
        (root / folder / "train" / "._train_0.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")
        write_pair(
            root / "images" / "train" / ".cache" / "extra.png",
            root / "masks" / "train" / ".cache" / "extra.png",
        )
    for location in ("images/{split}", "images/*/*.png"):
        source = ImageMaskFolder(root, "train", images=location)
        assert [p[0].name for p in source.pairs] == ["train_0.png", "train_1.png"]


def test_same_folder_with_mask_suffix_and_glob(tmp_path):
    root = tmp_path / "scans"
    for i in range(3):
        write_pair(root / "p1" / f"scan{i}.jpg", root / "p1" / f"scan{i}_seg.png", seed=i)
    source = ImageMaskFolder(
        root, "train", images="**/*.jpg", masks="p1", mask_suffix="_seg", fractions={"train": 1}
    )
    assert [p[0].name for p in source.pairs] == ["scan0.jpg", "scan1.jpg", "scan2.jpg"]
    assert [p[1].name for p in source.pairs] == ["scan0_seg.png", "scan1_seg.png", "scan2_seg.png"]


def test_fraction_split_is_seeded_disjoint_and_complete(tmp_path):
    root = tmp_path / "pool"
    for i in range(10):
        write_pair(root / "img" / f"{i:02d}.png", root / "lbl" / f"{i:02d}.png", seed=i)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}

    def stems(split, seed=3):
        source = ImageMaskFolder(
            root, split, images="img", masks="lbl", fractions=fractions, seed=seed
        )
        return {source.stem(i) for i in range(len(source))}

    parts = [stems(s) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [6, 2, 2]
    assert set.union(*parts) == {f"{i:02d}" for i in range(10)}
    assert stems("train") == parts[0]  # same seed, same split
    assert stems("train", seed=4) != parts[0]
    np.testing.assert_array_equal(
        split_by_fraction(10, "val", fractions, 3), split_by_fraction(10, "val", fractions, 3)
    )


def test_label_map_renames_raw_values(tmp_path):
    root = tmp_path / "binary"
    write_pair(root / "images/train/a.png", root / "masks/train/a.png", labels=(0, 255))
    source = ImageMaskFolder(root, "train", label_map={0: 0, 255: 1})
    assert set(np.unique(source.load(0)[1])) == {0, 1}
    source = ImageMaskFolder(root, "train", label_map={0: 0})
    with pytest.raises(SampleError, match=r"a\.png: mask values \[255\] are not keys"):
        source.load(0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"images": "images", "masks": "masks"}, ValueError, "set dataset.source.fractions"),
        ({"fractions": {"train": 1.0}}, ValueError, "fractions must be null"),
        ({"images": "img/{split}"}, FileNotFoundError, r"img/train is not a folder"),
    ],
)
def test_configuration_errors_name_the_keys(tmp_path, kwargs, error, message):
    root = split_tree(tmp_path / "data")
    with pytest.raises(error, match=message):
        ImageMaskFolder(root, "train", **kwargs)


def test_missing_mask_and_orphan_mask_are_named(tmp_path):
    root = split_tree(tmp_path / "data")
    (root / "masks/train/train_2.png").unlink()
    with pytest.raises(SampleError, match=r"images/train/train_2\.png: no mask named train_2"):
        ImageMaskFolder(root, "train")
    (root / "images/train/train_2.png").unlink()
    write_pair(root / "elsewhere/x.png", root / "masks/train/orphan.png")
    with pytest.raises(SampleError, match=r"masks/train/orphan\.png: no image named orphan"):
        ImageMaskFolder(root, "train")


def test_bad_samples_fail_naming_the_files(tmp_path):
    root = split_tree(tmp_path / "data", {"train": 3})
    # a mask of the wrong size, a label outside the class set, an unreadable image
    write_pair(root / "images/train/train_0.png", root / "tmp.png", size=(32, 48))
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(root / "masks/train/train_0.png")
    Image.fromarray(np.full((32, 48), 7, np.uint8)).save(root / "masks/train/train_1.png")
    (root / "images/train/train_2.png").write_bytes(b"not a png")
    dataset = SegmentationDataset(ImageMaskFolder(root, "train"), num_classes=2)
    with pytest.raises(SampleError, match=r"mask .*masks/train/train_0\.png\).*image size"):
        dataset[0]
    with pytest.raises(SampleError, match=r"masks/train/train_1\.png\): mask has labels \[7\]"):
        dataset[1]
    with pytest.raises(SampleError, match=r"images/train/train_2\.png: cannot read"):
        dataset[2]
    rgb_mask = root / "masks/train/train_1.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(rgb_mask)
    with pytest.raises(SampleError, match=r"train_1\.png: a label map must be single-channel"):
        dataset[1]


def test_prediction_file_at_mask_size(tmp_path):
    root = split_tree(tmp_path / "data")
    source = ImageMaskFolder(root, "val")
    path = source.write_prediction(0, np.ones((16, 24), np.uint8), tmp_path / "out")
    assert path == tmp_path / "out" / "val_0.png"
    written = np.asarray(Image.open(path))
    assert written.shape == (32, 48) and (written == 1).all()


def folder_overrides(root: Path, *extra: str) -> list[str]:
    return [
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.train_transform.crop=[32,32]",
        "dataset.batch_size=2",
        "dataset.num_workers=0",
        "model=unet_tiny",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        *extra,
    ]


def test_folder_dataset_trains_with_fast_dev_run(tmp_path):
    root = split_tree(tmp_path / "data")
    cfg = compose("train", folder_overrides(root, "debug=fast_dev_run"), tmp_path / "run")
    datamodule = instantiate(cfg.dataset)
    assert datamodule.palette == ((0, 0, 0), (220, 20, 60))
    _, metrics = train(cfg)
    assert {"train/loss", "val/mIoU"} <= set(metrics)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0


def test_jpeg_masks_are_refused_unless_allowed(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        write_pair(root / "images/train" / f"t{i}.png", root / "masks/train" / f"t{i}.jpg")
    with pytest.raises(ValueError) as error:
        ImageMaskFolder(root, "train")
    text = str(error.value)
    assert "2 of 2 masks are JPEG" in text and "t0.jpg" in text
    assert "dataset.source.allow_lossy_masks=true" in text
    assert len(ImageMaskFolder(root, "train", allow_lossy_masks=True)) == 2


def test_fingerprint_follows_files_and_label_map(tmp_path):
    root = split_tree(tmp_path / "data", {"train": 2})
    first = ImageMaskFolder(root, "train").fingerprint()
    assert ImageMaskFolder(root, "train").fingerprint() == first
    assert ImageMaskFolder(root, "train", label_map={0: 0, 1: 1}).fingerprint() != first
    write_pair(root / "images/train/train_1.png", root / "masks/train/train_1.png", labels=(1, 0))
    assert ImageMaskFolder(root, "train").fingerprint()["files"] != first["files"]


def test_binary_masks_saved_as_0_255_stop_at_start_and_train_with_label_map(tmp_path):
    # The most common binary format: before, this trained to val/test mIoU 1.0000 because
    # every foreground pixel was the ignore label.
    root = tmp_path / "data"
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(count):
            write_pair(
                root / "images" / split / f"{i}.png",
                root / "masks" / split / f"{i}.png",
                labels=(0, 255),
                seed=i,
            )
    run = tmp_path / "run"
    with pytest.raises(ValueError) as error:
        train(compose("train", folder_overrides(root), run))
    text = str(error.value)
    assert "'foreground' (id 1)" in text and "dataset.source.label_map" in text
    assert not (run / "checkpoints").exists() and not (run / "final_metrics.json").exists()

    cfg = compose("train", folder_overrides(root, "dataset.source.label_map={0: 0, 255: 1}"), run)
    _, metrics = train(cfg)
    assert metrics["val/mIoU"] < 1.0 and metrics["test/mIoU"] < 1.0


def test_a_corrupt_test_mask_fails_before_training(tmp_path):
    root = split_tree(tmp_path / "data")
    (root / "masks/test/test_0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run = tmp_path / "run"
    with pytest.raises(SampleError, match="test_0.png"):
        train(compose("train", folder_overrides(root), run))
    assert not (run / "checkpoints").exists()
