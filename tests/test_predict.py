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
    inner = [f"ckpt_path={tiny_checkpoint}", f"input={inputs}", f"output={inputs / 'seg'}"]
    first = predict(compose("predict", inner, tmp_path / "run2"))
    again = predict(compose("predict", [*inner, "overwrite=true"], tmp_path / "run3"))
    assert len(first) == len(again) == 6
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


def predict_cfg(ckpt, inputs, out, run, *extra):
    return compose(
        "predict", [f"ckpt_path={ckpt}", f"input={inputs}", f"output={out}", *extra], run
    )


def test_inputs_sharing_a_stem_keep_their_extension(tiny_module, tiny_checkpoint, tmp_path):
    inputs = tmp_path / "in"
    png = write_image(inputs / "a.png", 20, 24, seed=1)
    jpg = write_image(inputs / "A.jpg", 20, 24, seed=2)  # clashes on case-insensitive disks
    write_image(inputs / "b.png", 20, 24, seed=3)
    out = tmp_path / "out"
    written = predict(predict_cfg(tiny_checkpoint, inputs, out, tmp_path / "run"))
    names = sorted(p.name for p in written)
    assert len(names) == len(set(n.lower() for n in names)) == 9
    assert {"A_jpg_labels.png", "a_png_labels.png", "b_labels.png"} <= set(names)
    for source, name in ((png, "a_png"), (jpg, "A_jpg")):
        labels = np.asarray(Image.open(out / f"{name}_labels.png"))
        np.testing.assert_array_equal(labels, expected_labels(tiny_module, source))


def test_existing_outputs_are_never_replaced_without_overwrite(tiny_checkpoint, tmp_path):
    source = write_image(tmp_path / "b.png", 20, 24)
    mine = tmp_path / "b_labels.png"
    mine.write_bytes(b"the user's own file")
    cfg = predict_cfg(tiny_checkpoint, source, tmp_path, tmp_path / "run")
    with pytest.raises(FileExistsError, match=r"b_labels\.png.*overwrite=true"):
        predict(cfg)
    assert mine.read_bytes() == b"the user's own file"
    assert not (tmp_path / "b_color.png").exists()  # refused before any file was written
    written = predict(
        predict_cfg(tiny_checkpoint, source, tmp_path, tmp_path / "r", "overwrite=true")
    )
    assert mine in written and Image.open(mine).mode == "L"


def test_output_in_the_input_folder_writes_beside_and_skips_earlier_results(
    tiny_checkpoint, tmp_path
):
    folder = tmp_path / "photos"
    write_image(folder / "x.png", 20, 24, seed=1)
    write_image(folder / "y.jpg", 20, 24, seed=2)
    (folder / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS copy residue
    write_image(folder / ".thumbs" / "x.png", 8, 8)
    first = predict(predict_cfg(tiny_checkpoint, folder, folder, tmp_path / "run"))
    assert sorted(p.name for p in first) == sorted(
        f"{s}_{k}.png" for s in ("x", "y") for k in ("labels", "color", "overlay")
    )
    again = predict_cfg(tiny_checkpoint, folder, folder, tmp_path / "run2", "overwrite=true")
    assert sorted(predict(again)) == sorted(first)  # its own results are not inputs


def test_predict_never_writes_over_an_input_image(tiny_checkpoint, tmp_path):
    from cheeger.predict import check_targets

    image = write_image(tmp_path / "c_labels.png", 8, 8)
    with pytest.raises(FileExistsError, match="over its input image"):
        check_targets([image], [image], overwrite=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("alpha=1.5", r"alpha=1\.5.*\[0, 1\]|alpha=1\.5.*<= 1"),
        ("alpha=nan", "alpha=nan"),
        ("overwrite=maybe", "overwrite='maybe'"),
        ("mean=[0.5,0.5]", r"mean must be 3 finite numbers"),
        ("std=[1,1,0]", "mean and std must be set together"),
    ],
)
def test_bad_predict_settings_fail_before_any_work(tiny_checkpoint, tmp_path, override, message):
    source = write_image(tmp_path / "in" / "a.png", 8, 8)
    extra = [override, "std=[1,1,1]"] if override.startswith("mean") else [override]
    cfg = predict_cfg(tmp_path / "missing.ckpt", source, tmp_path / "out", tmp_path / "r", *extra)
    with pytest.raises(ValueError, match=message):
        predict(cfg)  # the checkpoint does not exist: the config is checked first
    assert not (tmp_path / "out").exists()


def test_predict_uses_the_normalisation_stored_in_the_checkpoint(
    tiny_module, tiny_checkpoint, tmp_path, caplog
):
    from tests.conftest import save_checkpoint

    source = write_image(tmp_path / "a.png", 20, 24)
    custom = {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}
    tiny_module.model_config["dataset"].update(custom)
    ckpt = save_checkpoint(tiny_module, tmp_path / "custom.ckpt")
    predict(predict_cfg(ckpt, source, tmp_path / "out", tmp_path / "run"))
    image = np.asarray(Image.open(source).convert("RGB"))
    with torch.no_grad():
        padded = np.pad(image, ((0, 0), (0, 0), (0, 0)), mode="edge")  # 20x24: multiple of 4
        x = torch.from_numpy(normalize_image(padded, custom["mean"], custom["std"]))[None]
        expected = tiny_module(x)[0].argmax(1)[0].numpy()
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    np.testing.assert_array_equal(labels, expected)
    assert not np.array_equal(labels, expected_labels(tiny_module, source))  # ImageNet differs
    # asking for other values warns and keeps the stored ones
    with caplog.at_level("WARNING"):
        predict(
            predict_cfg(
                ckpt, source, tmp_path / "out2", tmp_path / "run2", "mean=[0,0,0]", "std=[1,1,1]"
            )
        )
    assert "mean=[0.0, 0.0, 0.0] differs" in caplog.text
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out2" / "a_labels.png")), labels
    )


def test_old_checkpoint_without_normalisation_uses_the_config_or_imagenet(
    tiny_module, tmp_path, caplog
):
    from tests.conftest import save_checkpoint

    source = write_image(tmp_path / "a.png", 20, 24)
    for key in ("mean", "std"):
        del tiny_module.model_config["dataset"][key]
    ckpt = save_checkpoint(tiny_module, tmp_path / "old.ckpt")
    with caplog.at_level("WARNING"):
        predict(predict_cfg(ckpt, source, tmp_path / "out", tmp_path / "run"))
    assert "stores no input normalisation" in caplog.text and "ImageNet" in caplog.text
    labels = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    np.testing.assert_array_equal(labels, expected_labels(tiny_module, source))
