"""albumentations pipelines built from plain config values.

Masks are always resampled with nearest neighbour and padded with the ignore
label, so augmentation never invents class ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2

from cheeger.data.classes import IGNORE_INDEX


def train_transform(
    crop: Sequence[int] | None = None,
    scale: Sequence[float] = (0.75, 1.5),
    hflip: bool = True,
    color_jitter: float = 0.2,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """Random scale -> pad -> random crop -> horizontal flip -> colour jitter.

    Args:
        crop: (height, width) of the crop; None keeps the scaled size (then
            scale should be 1 so that batches stack).
        scale: (min, max) resize factor, sampled uniformly.
        hflip: random horizontal flip with probability 0.5.
        color_jitter: strength for brightness/contrast/saturation (hue gets a
            quarter of it); 0 disables.
        ignore_index: mask value used for padding.
    """
    lo, hi = (float(s) for s in scale)
    if not 0 < lo <= hi:
        raise ValueError(
            f"dataset.train_transform.scale must satisfy 0 < min <= max, found {scale}"
        )
    ops: list = []
    if (lo, hi) != (1.0, 1.0):
        ops.append(
            A.RandomScale(
                scale_limit=(lo - 1.0, hi - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    if crop is not None:
        h, w = (int(c) for c in crop)
        if h < 1 or w < 1:
            raise ValueError(f"dataset.train_transform.crop must be positive, found {crop}")
        ops.append(
            A.PadIfNeeded(
                min_height=h,
                min_width=w,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=ignore_index,
            )
        )
        ops.append(A.RandomCrop(height=h, width=w))
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        ops.append(
            A.ColorJitter(
                brightness=color_jitter,
                contrast=color_jitter,
                saturation=color_jitter,
                hue=color_jitter / 4,
                p=0.8,
            )
        )
    return A.Compose(ops)


# A crop may pad the scaled image a little (ignored border), not mostly: beyond this
# factor per side, batches are mostly padding and memory grows with the crop.
MAX_CROP_PADDING = 2.0


def check_crop_fits(
    crop: Sequence[int], image_size: Sequence[int], scale: Sequence[float] = (1.0, 1.0)
) -> None:
    """Refuse a training crop more than ``MAX_CROP_PADDING`` times the largest scaled image.

    Args:
        crop: (height, width) of ``dataset.train_transform.crop``.
        image_size: (height, width) of a training image.
        scale: ``dataset.train_transform.scale`` (min, max).

    Raises:
        ValueError: naming ``dataset.train_transform.crop``, the image size and the limit.
    """
    hi = float(max(scale))
    limit = [int(MAX_CROP_PADDING * hi * s) for s in image_size]
    if any(int(c) > m for c, m in zip(crop, limit, strict=True)):
        raise ValueError(
            f"dataset.train_transform.crop={[int(c) for c in crop]} is far larger than the "
            f"training images ({int(image_size[0])}x{int(image_size[1])}, scaled by up to "
            f"{hi:g}): every sample would be mostly padding. Use a crop of at most "
            f"{limit[0]}x{limit[1]} (e.g. the image size)."
        )


def eval_transform(size: Sequence[int] | None = None) -> A.Compose | None:
    """Identity, or a resize of image (linear) and mask (nearest) to (height, width)."""
    if size is None:
        return None
    h, w = (int(s) for s in size)
    return A.Compose(
        [A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    )
