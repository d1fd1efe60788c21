"""Whole-image and sliding-window inference against direct computations on toy models."""

from __future__ import annotations

import pytest
import torch

from cheeger.models.inference import (
    Inference,
    pad_to_multiple,
    sliding_window_logits,
    whole_image_logits,
    window_starts,
)


def pointwise_model(image: torch.Tensor) -> torch.Tensor:
    """Logits that depend on each pixel only: (B, 3, h, w) -> (B, 2, h, w)."""
    return torch.stack([image.sum(1), image[:, 0] * image[:, 1]], dim=1)


class OffsetModel:
    """Logits = the pixel's position inside the window it was given, plus a call counter.

    With windows at known offsets, the average at a pixel is a sum we can write down.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, crop: torch.Tensor) -> torch.Tensor:
        batch, _, h, w = crop.shape
        self.calls += 1
        self.sizes.append((h, w))
        rows = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1).expand(batch, 1, h, w)
        cols = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand(batch, 1, h, w)
        return torch.cat([rows, cols, torch.full_like(rows, float(self.calls))], dim=1)


def test_window_starts_cover_the_axis():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(3, 4, 2) == [0]
    for length in range(1, 40):
        for window in range(1, 12):
            for stride in range(1, window + 1):
                covered = torch.zeros(length, dtype=torch.bool)
                for start in window_starts(length, window, stride):
                    assert start + min(window, length) <= length
                    covered[start : start + window] = True
                assert bool(covered.all()), (length, window, stride)
    with pytest.raises(ValueError, match="stride \\(5\\) larger than window \\(4\\)"):
        window_starts(10, 4, 5)


def test_pad_to_multiple_replicates_edges():
    image = torch.arange(2 * 3 * 5 * 7, dtype=torch.float64).view(2, 3, 5, 7)
    padded = pad_to_multiple(image, 4)
    assert padded.shape == (2, 3, 8, 8)
    torch.testing.assert_close(padded[..., :5, :7], image)
    torch.testing.assert_close(padded[..., 7, :7], image[..., 4, :])  # last row repeated
    torch.testing.assert_close(padded[..., :5, 7], image[..., :, 6])  # last column repeated
    assert pad_to_multiple(image, 1) is image


def test_whole_image_pads_for_the_model_and_crops_back():
    seen = []

    def needs_multiple_of_8(x):
        seen.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0
        return pointwise_model(x)

    image = torch.randn(2, 3, 13, 21, dtype=torch.float64)
    logits = whole_image_logits(needs_multiple_of_8, image, multiple=8)
    assert seen == [(16, 24)]
    torch.testing.assert_close(logits, pointwise_model(image))


@pytest.mark.parametrize("size", [(16, 32), (13, 29)])
def test_sliding_window_equal_to_image_is_whole_image(size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 5, padding=2).double()  # context-dependent logits
    image = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        whole = whole_image_logits(conv, image)
        sliding = sliding_window_logits(conv, image, window=size, stride=size)
        larger = sliding_window_logits(conv, image, window=(64, 64), stride=(64, 64))
    torch.testing.assert_close(sliding, whole, rtol=0, atol=0)
    torch.testing.assert_close(larger, whole, rtol=0, atol=0)


def test_overlapping_windows_average_their_logits():
    # Height 10 with windows of 4 every 3 -> starts 0, 3, 6; width 7 with windows of 5
    # every 2 -> starts 0, 2. A pixel's logit is its offset in each window covering it.
    model = OffsetModel()
    image = torch.zeros(1, 3, 10, 7, dtype=torch.float64)
    logits = sliding_window_logits(model, image, window=(4, 5), stride=(3, 2))
    assert model.calls == 6 and set(model.sizes) == {(4, 5)}
    row_starts, col_starts = [0, 3, 6], [0, 2]
    order = [(t, left) for t in row_starts for left in col_starts]  # the call order
    for y in range(10):
        for x in range(7):
            covering = [
                (i + 1, y - t, x - left)
                for i, (t, left) in enumerate(order)
                if t <= y < t + 4 and left <= x < left + 5
            ]
            expected = torch.tensor(covering, dtype=torch.float64).mean(0)
            torch.testing.assert_close(logits[0, :, y, x], expected[[1, 2, 0]])


def test_sliding_windows_pointwise_model_is_exact():
    # Any stride gives the whole-image result for a model without spatial context.
    image = torch.randn(3, 3, 23, 37, dtype=torch.float64)
    whole = pointwise_model(image)
    for window, stride in (((8, 8), (8, 8)), ((8, 16), (5, 3)), ((23, 10), (1, 10))):
        torch.testing.assert_close(
            sliding_window_logits(pointwise_model, image, window, stride), whole
        )


def test_inference_modes_and_validation():
    image = torch.randn(1, 3, 20, 30, dtype=torch.float64)
    shapes = []

    def model(x):
        shapes.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        return pointwise_model(x)

    torch.testing.assert_close(Inference("whole")(model, image, multiple=4), pointwise_model(image))
    shapes.clear()
    sliding = Inference("sliding", window=(10, 15), stride=(5, 15))
    torch.testing.assert_close(sliding(model, image, multiple=4), pointwise_model(image))
    assert shapes == [(12, 16)] * 6  # 3 x 2 windows of 10x15, each padded to 12x16
    with pytest.raises(ValueError, match="inference.mode must be one of"):
        Inference("tiles")
    with pytest.raises(ValueError, match=r"inference.stride must be >= 1 and at most"):
        Inference("sliding", window=(8, 8), stride=(4, 9))
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        Inference("sliding", window=(8,), stride=(4,))
