"""Dense logits for images of any size: whole-image or sliding-window inference.

A model function ``model_fn(image (B, 3, h, w)) -> logits (B, K, h, w)`` may
accept only some sizes (a U-Net of depth d needs multiples of 2**d) and only
so many pixels at once (a 1024x2048 Cityscapes image does not fit every GPU).

* ``whole_image_logits`` pads the image on the bottom and right edges
  (replicating the last row and column) to the next multiple, runs the model
  once and crops the logits back.
* ``sliding_window_logits`` runs the model on windows of a fixed size placed
  every ``stride`` pixels (the last window of each axis is moved flush with the
  image's end so that every pixel is covered) and averages, at each pixel, the
  logits of every window that covers it:

      logits(p) = sum_w logits_w(p) / #{w : p in w}

``Inference`` bundles the choice (``mode: whole | sliding``, window, stride) for
the configs of eval and predict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ModelFn = Callable[[Tensor], Tensor]
MODES = ("whole", "sliding")


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Replicate-pad (B, C, H, W) at the bottom/right to multiples of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, found {multiple}")
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")


def whole_image_logits(model_fn: ModelFn, image: Tensor, multiple: int = 1) -> Tensor:
    """One pass over the padded image: (B, 3, H, W) -> logits (B, K, H, W)."""
    height, width = image.shape[-2:]
    logits = model_fn(pad_to_multiple(image, multiple))
    return logits[..., :height, :width]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``window`` every ``stride`` along ``length``.

    The last window ends exactly at ``length``; a window larger than the axis is
    a single window at 0 (the caller clips it). Example: length 10, window 4,
    stride 3 -> [0, 3, 6].
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, found window={window}, stride={stride}")
    if stride > window:
        raise ValueError(
            f"stride ({stride}) larger than window ({window}) would leave pixels uncovered"
        )
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def sliding_window_logits(
    model_fn: ModelFn,
    image: Tensor,
    window: Sequence[int],
    stride: Sequence[int],
) -> Tensor:
    """Average of the logits of overlapping windows, (B, 3, H, W) -> (B, K, H, W).

    Args:
        model_fn: window (B, 3, h, w) -> logits (B, K, h, w), h <= window[0], w <= window[1]
            (windows are clipped to the image when it is smaller than the window).
        image: the full image batch.
        window: (height, width) of a window.
        stride: (vertical, horizontal) step between window starts, at most the window.

    Returns:
        logits in the dtype of the model's output; memory holds one window's
        logits plus two full-size accumulators, never all windows at once.
    """
    (win_h, win_w), (step_h, step_w) = (int(v) for v in window), (int(v) for v in stride)
    height, width = image.shape[-2:]
    total = count = None
    for top in window_starts(height, win_h, step_h):
        for left in window_starts(width, win_w, step_w):
            crop = image[..., top : top + win_h, left : left + win_w]
            logits = model_fn(crop)
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], height, width))
                count = logits.new_zeros((1, 1, height, width))
            total[..., top : top + crop.shape[-2], left : left + crop.shape[-1]] += logits
            count[..., top : top + crop.shape[-2], left : left + crop.shape[-1]] += 1
    return total / count


class Inference:
    """How eval and predict turn an image into logits (a configuration, no parameters).

    Args:
        mode: ``whole`` (one pass, padded to the model's multiple) or ``sliding``.
        window: (height, width) of the sliding windows (mode ``sliding``).
        stride: (vertical, horizontal) step between windows (mode ``sliding``);
            window - stride pixels overlap.

    ``inference(model_fn, image, multiple)`` -> logits (B, K, H, W) for an image
    (B, 3, H, W) of any size; ``multiple`` is the size factor the model needs.
    """

    def __init__(
        self,
        mode: str = "whole",
        window: Sequence[int] = (512, 1024),
        stride: Sequence[int] = (341, 683),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"inference.mode must be one of {MODES}, found {mode!r}")
        if len(window) != 2 or len(stride) != 2:
            raise ValueError(
                f"inference.window and inference.stride must be (height, width); "
                f"found {list(window)} and {list(stride)}"
            )
        for win, step in zip(window, stride, strict=True):
            if not 1 <= int(step) <= int(win):
                raise ValueError(
                    f"inference.stride must be >= 1 and at most inference.window on each axis "
                    f"(else pixels go uncovered); found window={list(window)}, "
                    f"stride={list(stride)}"
                )
        self.mode = mode
        self.window = tuple(int(v) for v in window)
        self.stride = tuple(int(v) for v in stride)

    @torch.no_grad()
    def __call__(self, model_fn: ModelFn, image: Tensor, multiple: int = 1) -> Tensor:
        if self.mode == "whole":
            return whole_image_logits(model_fn, image, multiple)

        def padded(crop: Tensor) -> Tensor:
            return whole_image_logits(model_fn, crop, multiple)

        return sliding_window_logits(padded, image, self.window, self.stride)

    def __repr__(self) -> str:
        if self.mode == "whole":
            return "Inference(mode='whole')"
        return f"Inference(mode='sliding', window={self.window}, stride={self.stride})"
