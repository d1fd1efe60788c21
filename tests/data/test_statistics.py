from __future__ import annotations

import numpy as np
import pytest
import torch

from cheeger.data.statistics import class_pixel_counts, median_frequency_weights


class Masks:
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def raw(self, i):
        return None, self.masks[i]


def test_counts_match_numpy_and_skip_ignore():
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 4, (5, 7)).astype(np.uint8) for _ in range(6)]
    masks[2][0, :] = 255
    counts = class_pixel_counts(Masks(masks), num_classes=5, max_samples=100)
    expected = sum(np.bincount(m[m != 255], minlength=5) for m in masks)
    assert counts.tolist() == expected.tolist()


def test_median_frequency_hand_example():
    # shares 0.5, 0.25, 0.25, absent: median over present = 0.25
    w = median_frequency_weights(torch.tensor([50, 25, 25, 0]))
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 1.0, 1.0]))
    capped = median_frequency_weights(torch.tensor([1000, 1000, 1]), max_weight=10.0)
    assert capped[2].item() == 10.0
    with pytest.raises(ValueError, match="all zero"):
        median_frequency_weights(torch.zeros(3))
