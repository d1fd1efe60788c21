"""The sample contract: every bad pair fails with the sample's name in the message."""

from __future__ import annotations

import numpy as np
import pytest

from cheeger.data.dataset import SampleError, SegmentationDataset
from cheeger.data.transforms import train_transform


class ListSource:
    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def load(self, index):
        return self.pairs[index]

    def describe(self, index):
        return f"list[{index}]"


def pair(h=8, w=12, label=1):
    return np.full((h, w, 3), 128, np.uint8), np.full((h, w), label, np.uint8)


def test_good_sample_becomes_normalised_tensors():
    image, mask = pair()
    mask[0, 0] = 255
    ds = SegmentationDataset(
        ListSource([(image, mask)]), num_classes=3, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    out = ds[0]
    assert out["image"].shape == (3, 8, 12) and out["mask"].shape == (8, 12)
    assert out["image"][0, 0, 0].item() == pytest.approx((128 / 255 - 0.5) / 0.25, rel=1e-4)
    assert out["mask"][0, 0].item() == 255 and out["mask"].dtype.is_floating_point is False


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (pair()[0], np.full((8, 12), 7, np.uint8)), r"list\[0\]: mask has labels \[7\]"),
        (lambda: (pair()[0], np.zeros((8, 11), np.uint8)), r"list\[0\]: image size"),
        (
            lambda: (np.full((8, 12, 3), np.nan, np.float32), pair()[1]),
            r"list\[0\]: image contains NaN",
        ),
        (lambda: (np.zeros((8, 12), np.uint8), pair()[1]), r"list\[0\]: image must be \(H, W, 3\)"),
        (lambda: (pair()[0], np.zeros((8, 12), np.float32)), r"list\[0\]: mask dtype"),
    ],
)
def test_bad_samples_are_named(make, message):
    ds = SegmentationDataset(ListSource([make()]), num_classes=3)
    with pytest.raises(SampleError, match=message):
        ds[0]


def test_augmentation_never_invents_labels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (32, 48)).astype(np.uint8)
    t = train_transform(crop=(32, 48), scale=(0.5, 2.0))
    ds = SegmentationDataset(ListSource([(image, mask)]), num_classes=4, transform=t)
    for _ in range(10):
        out = ds[0]
        assert out["image"].shape == (3, 32, 48)
        assert set(out["mask"].unique().tolist()) <= {0, 1, 2, 3, 255}
