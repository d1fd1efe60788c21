"""The sample contract: every bad pair fails with the sample's name in the message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.data.dataset import SampleError, SampleSource, SegmentationDataset
from cheeger.data.transforms import train_transform


class ListSource(SampleSource):
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


def test_seeded_key_fixes_the_augmentation():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (24, 40)).astype(np.uint8)
    ds = SegmentationDataset(
        ListSource([(image, mask)]),
        num_classes=4,
        transform=train_transform(crop=(16, 16), scale=(0.5, 2.0), color_jitter=0.3),
    )
    first = ds[(0, 123)]
    ds[0], ds[(0, 5)]  # draws in between do not matter
    again = ds[(0, 123)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert first["index"] == 0
    others = [ds[(0, seed)]["image"] for seed in range(8)]
    assert not all(torch.equal(others[0], o) for o in others[1:])


def test_seeded_key_needs_a_reseedable_transform():
    ds = SegmentationDataset(
        ListSource([pair()]),
        num_classes=3,
        transform=lambda image, mask: {"image": image, "mask": mask},
    )
    assert ds[0]["image"].shape == (3, 8, 12)
    with pytest.raises(TypeError, match="set_random_state"):
        ds[(0, 1)]


def test_a_source_outside_the_contract_is_refused_and_defaults_say_not_available():
    class Pairs:  # len/load/describe, but not a SampleSource
        def __len__(self):
            return 1

    with pytest.raises(TypeError, match=r"^dataset.source must build .*SampleSource.*Pairs"):
        SegmentationDataset(Pairs(), num_classes=3)
    source = ListSource([pair()])
    assert source.fingerprint() is None and source.present_train_ids is None
    assert not source.writes_predictions
    with pytest.raises(NotImplementedError, match="ListSource has no prediction file format"):
        source.write_prediction(0, np.zeros((8, 12), np.uint8), ".")
