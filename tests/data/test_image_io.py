"""Image file reading and writing: formats, resizing, and errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cheeger.data.dataset import SampleError
from cheeger.data.image_io import image_size, read_label_map, read_rgb, write_label_map


def test_read_rgb_expands_greyscale_and_palette(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = read_rgb(tmp_path / "grey.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    assert image_size(tmp_path / "grey.png") == (3, 4)


def test_label_maps_keep_palette_indices_and_16_bit_values(tmp_path):
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    paletted = Image.fromarray(indices, mode="P")
    paletted.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    paletted.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "p.png"), indices)
    wide = np.array([[0, 300], [1000, 7]], np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "wide.png"), wide)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(p), "single-channel"),
        (
            lambda p: Image.fromarray(np.zeros((2, 2), np.float32)).save(p, format="TIFF"),
            "single-channel",
        ),
        (lambda p: p.write_bytes(b"\x89PNG broken"), "cannot read the image file"),
    ],
)
def test_bad_label_files_are_named(tmp_path, make, message):
    path = tmp_path / "mask.png"
    make(path)
    with pytest.raises(SampleError, match=f"{path}: .*{message}"):
        read_label_map(path)


def test_write_label_map_resizes_by_nearest_and_checks_range(tmp_path):
    labels = np.array([[1, 2], [3, 4]], np.int64)
    path = write_label_map(tmp_path / "sub" / "out.png", labels, size=(4, 6))
    written = Image.open(path)
    assert written.mode == "L" and written.size == (6, 4)
    np.testing.assert_array_equal(
        np.asarray(written), np.repeat(np.repeat(labels, 2, axis=0), 3, axis=1)
    )
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        write_label_map(tmp_path / "x.png", np.array([[256]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_label_map(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
