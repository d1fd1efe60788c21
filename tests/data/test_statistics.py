from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cheeger.data.dataset import SampleError
from cheeger.data.statistics import (
    LabelHistogram,
    cache_path,
    check_histograms,
    label_histogram,
    median_frequency_weights,
    read_cached,
    write_cached,
)


class Masks:
    """raw(i) -> (None, mask); a mask given as a string is a bad sample with that text."""

    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def raw(self, i):
        if isinstance(self.masks[i], str):
            raise SampleError(self.masks[i])
        return None, self.masks[i]


def random_masks(count=6, seed=0):
    rng = np.random.default_rng(seed)
    masks = [rng.integers(0, 4, (5, 7)).astype(np.uint8) for _ in range(count)]
    masks[2][0, :] = 255
    return masks


@pytest.mark.parametrize("workers", [0, 2])
def test_histogram_matches_numpy_over_every_sample(workers):
    masks = random_masks()
    histogram = label_histogram(Masks(masks), num_classes=5, num_workers=workers)
    expected = sum(np.bincount(m[m != 255], minlength=5) for m in masks)
    assert list(histogram.counts) == expected.tolist()
    assert histogram.ignored == 7 and histogram.samples == 6 and histogram.skipped == ()
    assert histogram.pixels == 6 * 35
    assert histogram.ignored_share == pytest.approx(7 / 210)


def test_bad_sample_fails_by_name_or_is_listed_with_skip_bad():
    masks = [*random_masks(3), "folder[test][x] (mask x.png): cannot read the image file"]
    with pytest.raises(SampleError, match=r"folder\[test\]\[x\]"):
        label_histogram(Masks(masks), num_classes=5)
    histogram = label_histogram(Masks(masks), num_classes=5, skip_bad=True)
    assert histogram.samples == 3 and len(histogram.skipped) == 1
    with pytest.raises(ValueError, match="no sample"):
        label_histogram(Masks([]), num_classes=5)


def test_cache_round_trip_and_unreadable_cache(tmp_path):
    histogram = LabelHistogram((3, 0, 5), ignored=2, samples=4, skipped=("bad one",))
    path = cache_path(tmp_path / "cache", {"files": "abc", "num_classes": 3})
    assert path == cache_path(tmp_path / "cache", {"num_classes": 3, "files": "abc"})
    assert path != cache_path(tmp_path / "cache", {"files": "abd", "num_classes": 3})
    assert read_cached(path) is None
    write_cached(path, histogram)
    assert read_cached(path) == histogram
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    path.write_text("{truncated")
    assert read_cached(path) is None


NAMES = ["background", "foreground", "rare"]


def test_class_absent_from_training_is_an_error_naming_it_unless_allowed():
    # A 0/255 binary mask: the foreground is the ignore label, class 1 never occurs.
    train = LabelHistogram((900, 0, 10), ignored=1100, samples=4)
    with pytest.raises(ValueError) as error:
        check_histograms({"train": train}, NAMES)
    text = str(error.value)
    assert "'foreground' (id 1)" in text and "'rare'" not in text
    assert "dataset.source.label_map" in text and "dataset.allow_absent_classes=true" in text
    warnings = check_histograms({"train": train}, NAMES, allow_absent_classes=True)
    assert len(warnings) == 1  # the ignored share is still reported
    # Classes the source cannot produce are not required.
    present = LabelHistogram((900, 0, 10), ignored=0, samples=4)
    assert check_histograms({"train": present}, NAMES, expected_classes=[0, 2]) == []
    with pytest.raises(ValueError, match="'rare' \\(id 2\\)"):
        check_histograms({"train": LabelHistogram((5, 5, 0), 0, 1)}, NAMES)


def test_mostly_ignored_split_is_a_warning_naming_label_map(caplog):
    histograms = {
        "train": LabelHistogram((50, 30, 20), ignored=10, samples=2),
        "val": LabelHistogram((40, 0, 5), ignored=46, samples=1),  # 51% ignored
        "test": LabelHistogram((40, 5, 5), ignored=50, samples=1),  # exactly half: fine
    }
    with caplog.at_level(logging.WARNING, logger="cheeger.data"):
        warnings = check_histograms(histograms, NAMES)
    assert len(warnings) == 1
    assert "'val'" in warnings[0] and "51%" in warnings[0]
    assert "dataset.source.label_map" in warnings[0]
    assert warnings[0] in caplog.text


def test_median_frequency_hand_example():
    # shares 0.5, 0.25, 0.25: median 0.25
    w = median_frequency_weights(torch.tensor([50, 25, 25]))
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 1.0]))
    capped = median_frequency_weights(torch.tensor([1000, 1000, 1]), max_weight=10.0)
    assert capped[2].item() == 10.0
    with pytest.raises(ValueError, match="all zero"):
        median_frequency_weights(torch.zeros(3))


def test_median_frequency_absent_class_gets_the_cap_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cheeger.data"):
        w = median_frequency_weights(torch.tensor([50, 25, 25, 0]), max_weight=7.0)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 1.0, 7.0]))
    assert "classes [3] have no pixel" in caplog.text
