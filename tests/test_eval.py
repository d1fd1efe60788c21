"""cheeger.eval on the miniature Cityscapes tree: metrics equal the official evaluator's.

cheeger's mIoU (one confusion matrix over train ids, ignored ground truth dropped,
classes with an empty union left out of the mean) and the official average class
IoU (a confusion matrix over label ids, ``ignoreInEval`` rows and classes skipped,
NaN classes left out) are the same number whenever predictions only use the 19
evaluated classes, which argmax over train ids guarantees.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cheeger.data.cityscapes import Cityscapes
from cheeger.data.classes import CLASS_NAMES
from cheeger.data.dataset import normalize_image
from cheeger.eval import evaluate
from cheeger.module import load_module
from tests.conftest import compose, save_checkpoint

EVAL = [
    "dataset=cityscapes",
    "dataset.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture
def fitted_checkpoint(tiny_module, mini_cityscapes, tmp_path) -> Path:
    """``tiny_module`` whose classifier is a nearest-class-mean rule on the train split.

    Its val predictions are partly right (IoUs spread over 0..0.6), so the comparison
    with the official evaluator checks real values, not a wall of zeros.
    """
    train = Cityscapes(mini_cityscapes, "train")
    samples = [train.load(i) for i in range(len(train))]
    images = torch.stack([torch.from_numpy(normalize_image(image)) for image, _ in samples])
    labels = torch.stack([torch.from_numpy(mask).long() for _, mask in samples]).flatten()
    with torch.no_grad():
        features = tiny_module.backbone(images)
    features = features.permute(0, 2, 3, 1).reshape(labels.numel(), -1)
    weight = torch.zeros(19, features.shape[1])
    bias = torch.full((19,), -1e4)  # classes never seen are never predicted
    for c in labels[labels != 255].unique().tolist():
        mean = features[labels == c].mean(0)
        weight[c], bias[c] = mean, -0.5 * mean @ mean  # argmax = nearest class mean
    tiny_module.head.classifier.weight.data.copy_(weight[:, :, None, None])
    tiny_module.head.classifier.bias.data.copy_(bias)
    return save_checkpoint(tiny_module, tmp_path / "fitted.ckpt")


def official_scores(root: Path, predictions: Path, monkeypatch) -> dict:
    """Run cityscapesscripts' pixel-level evaluator (instance scores off) on ``predictions``."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    for name, value in {
        "predictionPath": str(predictions),
        "predictionWalk": None,
        "evalInstLevelScore": False,
        "JSONOutput": False,
        "quiet": True,
        "colorized": False,
    }.items():
        monkeypatch.setattr(official.args, name, value)
    truths = sorted(str(p) for p in (root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    found = [official.getPrediction(official.args, truth) for truth in truths]
    return official.evaluateImgLists(found, truths, official.args)


def run_eval(tmp_path: Path, root: Path, ckpt: Path, *overrides: str) -> tuple[dict, Path]:
    out = tmp_path / "eval"
    cfg = compose("eval", [*EVAL, f"dataset.root={root}", f"ckpt_path={ckpt}", *overrides], out)
    return evaluate(cfg), out / "predictions" / "val"


def test_mIoU_equals_the_official_cityscapes_evaluator(
    mini_cityscapes, fitted_checkpoint, tmp_path, monkeypatch, capsys
):
    metrics, exported = run_eval(tmp_path, mini_cityscapes, fitted_checkpoint)
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "BIoU" in printed
    assert f"3 predictions written to {exported}" in printed
    official = official_scores(mini_cityscapes, exported, monkeypatch)

    assert metrics["val/mIoU"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    scores = official["classScores"]
    assert set(CLASS_NAMES) <= set(scores)
    compared = 0
    for name in CLASS_NAMES:
        if math.isnan(scores[name]):
            assert f"val/iou/{name}" not in metrics  # undefined on both sides
        else:
            assert metrics[f"val/iou/{name}"] == pytest.approx(scores[name], abs=1e-6), name
            compared += 1
    # the comparison is not trivial: several classes, partly right, some undefined
    assert compared >= 10 and sum(0.05 < scores[n] < 1 for n in CLASS_NAMES) >= 5
    assert official["averageScoreClasses"] > 0.05
    assert any(math.isnan(scores[n]) for n in CLASS_NAMES)
    assert "val/boundary_iou" in metrics


def test_exported_files_are_label_ids_of_the_model_prediction(
    mini_cityscapes, tiny_checkpoint, tmp_path
):
    _, exported = run_eval(tmp_path, mini_cityscapes, tiny_checkpoint)
    from cityscapesscripts.helpers.labels import id2label

    source = Cityscapes(mini_cityscapes, "val")
    module = load_module(str(tiny_checkpoint)).eval()
    files = sorted(exported.rglob("*.png"))
    assert [p.relative_to(exported).as_posix() for p in files] == [
        f"{p.parent.name}/{p.name.replace('_leftImg8bit', '_pred_labelIds')}"
        for p in source.image_paths
    ]
    for i, path in enumerate(files):
        written = Image.open(path)
        assert written.mode == "L"
        assert written.size == Image.open(source.label_paths[i]).size
        ids = np.asarray(written)
        assert all(not id2label[int(v)].ignoreInEval for v in np.unique(ids))
        as_train = np.vectorize(lambda v: id2label[int(v)].trainId)(ids)
        with torch.no_grad():
            image = torch.from_numpy(normalize_image(source.load(i)[0]))[None]
            expected = module(image)[0].argmax(1)[0].numpy()
        np.testing.assert_array_equal(as_train, expected)


def test_sliding_window_eval(mini_cityscapes, tiny_checkpoint, tmp_path):
    whole, _ = run_eval(tmp_path / "whole", mini_cityscapes, tiny_checkpoint)
    # one window the size of the image: the same predictions
    same, _ = run_eval(
        tmp_path / "one",
        mini_cityscapes,
        tiny_checkpoint,
        "inference.mode=sliding",
        "inference.window=[32,64]",
        "inference.stride=[32,64]",
    )
    assert same["val/mIoU"] == whole["val/mIoU"]
    # overlapping windows with padding (window 20x36 is not a multiple of 4): runs, exports
    tiled, exported = run_eval(
        tmp_path / "tiled",
        mini_cityscapes,
        tiny_checkpoint,
        "inference.mode=sliding",
        "inference.window=[20,36]",
        "inference.stride=[12,28]",
    )
    assert 0.0 <= tiled["val/mIoU"] <= 1.0
    assert len(list(exported.rglob("*_pred_labelIds.png"))) == 3


# A normalisation far from ImageNet's: predictions made with the wrong one differ.
CUSTOM_MEAN, CUSTOM_STD = [0.9, 0.1, 0.5], [0.05, 0.5, 0.1]


def test_training_normalisation_is_stored_in_the_checkpoint(compose_train):
    from cheeger.module import SegmentationModule

    cfg = compose_train(f"dataset.mean={CUSTOM_MEAN}", f"dataset.std={CUSTOM_STD}")
    stored = SegmentationModule.from_config(cfg).model_config["dataset"]
    assert (stored["mean"], stored["std"]) == (CUSTOM_MEAN, CUSTOM_STD)


def test_eval_feeds_images_with_the_stored_normalisation(
    mini_cityscapes, tiny_module, tmp_path, caplog
):
    tiny_module.model_config["dataset"].update(mean=CUSTOM_MEAN, std=CUSTOM_STD)
    ckpt = save_checkpoint(tiny_module, tmp_path / "custom.ckpt")
    # The eval config keeps its ImageNet default: the checkpoint's values must win, said once.
    with caplog.at_level("WARNING", logger="cheeger.eval"):
        _, exported = run_eval(tmp_path, mini_cityscapes, ckpt)
    assert "dataset.mean=[0.485, 0.456, 0.406] differs" in caplog.text
    from cityscapesscripts.helpers.labels import id2label

    source = Cityscapes(mini_cityscapes, "val")
    differs = 0
    for i, path in enumerate(sorted(exported.rglob("*.png"))):
        as_train = np.vectorize(lambda v: id2label[int(v)].trainId)(np.asarray(Image.open(path)))
        image = source.load(i)[0]
        with torch.no_grad():
            right = torch.from_numpy(normalize_image(image, CUSTOM_MEAN, CUSTOM_STD))[None]
            wrong = torch.from_numpy(normalize_image(image))[None]
            expected = tiny_module(right)[0].argmax(1)[0].numpy()
            imagenet = tiny_module(wrong)[0].argmax(1)[0].numpy()
        np.testing.assert_array_equal(as_train, expected)
        differs += int((expected != imagenet).mean() > 0.05)
    assert differs == 3  # the test can tell the two normalisations apart


def test_checkpoint_without_stored_normalisation_keeps_the_config_values(
    mini_cityscapes, tiny_module, tmp_path, caplog
):
    for key in ("mean", "std"):
        del tiny_module.model_config["dataset"][key]
    ckpt = save_checkpoint(tiny_module, tmp_path / "old.ckpt")
    with caplog.at_level("WARNING", logger="cheeger.eval"):
        metrics, _ = run_eval(tmp_path, mini_cityscapes, ckpt)
    assert "stores no input normalisation" in caplog.text
    assert 0.0 <= metrics["val/mIoU"] <= 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.mean=[0.5,0.5]", "dataset.mean must be 3 finite numbers"),
        ("dataset.std=[0.2,0.0,0.2]", "dataset.std must be 3 finite numbers > 0"),
        ("dataset.mean=[0.5,nan,0.5]", "dataset.mean must be 3 finite numbers"),
    ],
)
def test_bad_normalisation_is_refused_naming_the_key(compose_train, override, message):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    with pytest.raises(InstantiationException, match=message):
        instantiate(compose_train(override).dataset)
