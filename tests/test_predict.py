"""cheeger.predict: label, colour and overlay files for images of any size."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cheeger.data.classes import CITYSCAPES_CLASSES
from cheeger.data.dataset import normalize_image
from cheeger.predict import overlay, predict
from tests.conftest import ROOT, compose


def write_image(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def expected_labels(module, path) -> np.ndarray:
    """The module's argmax on the image edge-padded to multiples of 4, cropped back."""
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="edge")
    with torch.no_grad():
        logits, _ = module(torch.from_numpy(normalize_image(padded))[None])
    return logits.argmax(1)[0, :h, :w].numpy()


def test_overlay_blends_image_and_colours():
    image = np.full((4, 6, 3), 100, np.uint8)
    color = np.zeros((4, 6, 3), np.uint8)
    color[:, 3:] = (200, 0, 50)
    out = overlay(image, color, alpha=0.25)
    np.testing.assert_array_equal(out[0, 0], [75, 75, 75])  # 0.75 * 100
    np.testing.assert_array_equal(out[0, 4], [125, 75, 88])  # 0.75 * 100 + 0.25 * colour
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(image, color, alpha=1.5)


def test_predict_writes_labels_colours_and_overlays_for_any_size(
    tiny_module, tiny_checkpoint, tmp_path, capsys
):
    inputs = tmp_path / "in"
    odd = write_image(inputs / "odd.png", 37, 53, seed=1)
    nested = write_image(inputs / "street" / "wide.jpg", 20, 90, seed=2)
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    cfg = compose(
        "predict",
        [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", f"output={out}", "device=cpu"],
        tmp_path / "run",
    )
    written = predict(cfg)
    assert len(written) == 6
    assert "100%" in capsys.readouterr().err  # tqdm progress bar
    # an output folder inside the input folder is not read back as input
    inner = compose(
        "predict",
        [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", f"output={inputs / 'seg'}"],
        tmp_path / "run2",
    )
    assert len(predict(inner)) == len(predict(inner)) == 6
    palette = np.zeros((256, 3), np.uint8)
    for c in CITYSCAPES_CLASSES:
        palette[c.train_id] = c.color
    for source, stem in ((odd, out / "odd"), (nested, out / "street" / "wide")):
        image = np.asarray(Image.open(source).convert("RGB"))
        labels_file = Image.open(f"{stem}_labels.png")
        assert labels_file.mode == "L" and labels_file.size == image.shape[1::-1]
        labels = np.asarray(labels_file)
        np.testing.assert_array_equal(labels, expected_labels(tiny_module, source))
        assert len(np.unique(labels)) > 1
        color = np.asarray(Image.open(f"{stem}_color.png"))
        np.testing.assert_array_equal(color, palette[labels])
        blended = np.asarray(Image.open(f"{stem}_overlay.png"))
        expected = np.rint(0.5 * image.astype(float) + 0.5 * palette[labels].astype(float))
        np.testing.assert_array_equal(blended, expected)


def test_single_image_with_palette_override_and_sliding_windows(
    tiny_module, tiny_checkpoint, tmp_path
):
    source = write_image(tmp_path / "one.png", 24, 40)
    colors = [[i, 255 - i, 7] for i in range(19)]
    cfg = compose(
        "predict",
        [
            f"ckpt_path={tiny_checkpoint}",
            f"input={source}",
            f"output={tmp_path / 'out'}",
            f"palette={colors}",
            "inference.mode=sliding",
            "inference.window=[24,40]",
            "inference.stride=[24,40]",
        ],
        tmp_path / "run",
    )
    predict(cfg)
    labels = np.asarray(Image.open(tmp_path / "out" / "one_labels.png"))
    np.testing.assert_array_equal(labels, expected_labels(tiny_module, source))
    color = np.asarray(Image.open(tmp_path / "out" / "one_color.png"))
    np.testing.assert_array_equal(color, np.asarray(colors, np.uint8)[labels])


def test_missing_input_is_named(tiny_checkpoint, tmp_path):
    cfg = compose(
        "predict",
        [f"ckpt_path={tiny_checkpoint}", f"input={tmp_path / 'nope'}", f"output={tmp_path}"],
        tmp_path / "run",
    )
    with pytest.raises(FileNotFoundError, match="input=.*nope.*no such image file or folder"):
        predict(cfg)


def test_command_line_entry_point(tiny_checkpoint, tmp_path):
    source = write_image(tmp_path / "in" / "a.png", 30, 50)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "-m",
        "cheeger.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"input={source.parent}",
        f"output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 image(s) segmented" in done.stdout and "predict: 100%" in done.stderr
    for kind in ("labels", "color", "overlay"):
        assert (tmp_path / "out" / f"a_{kind}.png").is_file()
