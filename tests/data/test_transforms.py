"""Training crops against image sizes: padding a little is fine, mostly padding is refused."""

from __future__ import annotations

import pytest

from cheeger.data.transforms import MAX_CROP_PADDING, check_crop_fits
from cheeger.train import train


@pytest.mark.parametrize(
    "crop, size, scale",
    [((128, 256), (128, 256), (1.0, 1.0)), ((512, 1024), (256, 512), (0.5, 1.0))],
)
def test_crops_up_to_the_padding_limit_pass(crop, size, scale):
    check_crop_fits(crop, size, scale)
    limit = [int(MAX_CROP_PADDING * max(scale) * s) for s in size]
    check_crop_fits(limit, size, scale)  # the limit itself is allowed


def test_a_crop_past_the_limit_in_either_side_is_refused():
    check_crop_fits((256, 512), (128, 256))
    for crop in ((257, 512), (256, 513)):
        with pytest.raises(ValueError, match=r"dataset.train_transform.crop=\[") as raised:
            check_crop_fits(crop, (128, 256))
        assert "128x256" in str(raised.value) and "at most 256x512" in str(raised.value)


def test_train_refuses_a_huge_crop_before_the_first_step(compose_train):
    # 4096x4096 on 32x64 images: once this reached 16 GB of memory before failing.
    cfg = compose_train("dataset.train_transform.crop=[4096,4096]", "model.depth=2")
    with pytest.raises(ValueError, match=r"crop=\[4096, 4096\] is far larger") as raised:
        train(cfg)
    assert "32x64, scaled by up to 1.5" in str(raised.value)
