"""experiments/head_study.py: statistics against hand computations, the report, and a tiny
real study (two variants x one seed, trained as `python -m cheeger.train` subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import yaml

from tests.conftest import ROOT, TINY

spec = importlib.util.spec_from_file_location("head_study", ROOT / "experiments" / "head_study.py")
head_study = importlib.util.module_from_spec(spec)
sys.modules["head_study"] = head_study
spec.loader.exec_module(head_study)


def _run(variant, seed, miou, step):
    return head_study.Run(
        variant,
        seed,
        {"mIoU": miou, "boundary_iou": miou / 2, "bf": miou / 3},
        {1: miou / 4, 4: miou / 2},
        step,
        1000.0 + seed,
        60.0,
        miou,
    )


def test_report_has_means_ratios_paired_rows_and_trimap(tmp_path):
    study = {"baseline": "conv", "variants": {"conv": [], "spec": ["head=spectral"]}}
    runs = [
        _run("conv", 0, 0.6, 0.5),
        _run("conv", 1, 0.7, 0.7),
        _run("spec", 0, 0.65, 1.0),
        _run("spec", 1, 0.8, 1.4),
    ]
    text = head_study.report(study, runs, "# t")
    assert "| conv | 2 | 0.650 ± 0.071 |" in text
    assert "| 2.00 | 1001 |" in text  # median step ratio 1.2 / 0.6, the max peak memory
    assert "| spec | mIoU | +0.050, +0.100 | +0.075 ± 0.035 |" in text
    assert "w = 1 | w = 4" in text and text.count("| spec | 0 |") == 1


def test_eval_variant_must_follow_its_source(tmp_path):
    path = tmp_path / "study.yaml"
    study = {"name": "x", "seeds": [0], "baseline": "conv", "shared": []}
    study["variants"] = {"filtered": {"eval_of": "conv", "overrides": []}, "conv": []}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    with pytest.raises(ValueError, match="variant 'filtered'.*earlier variant"):
        head_study.load_study(path)


def test_bad_study_file_names_the_key(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "seeds": [0],
                "baseline": "conv",
                "shared": [],
                "variants": {"spectral": []},
            }
        )
    )
    with pytest.raises(ValueError, match="baseline 'conv' is not among the variants"):
        head_study.load_study(path)
    path.write_text(yaml.safe_dump({"name": "x", "seeds": 0}))
    with pytest.raises(ValueError, match="`seeds` must be a list, found 0"):
        head_study.load_study(path)


def test_committed_study_file_is_valid():
    study = head_study.load_study(ROOT / "experiments" / "head_study.yaml")
    assert len(study["seeds"]) >= 3 and "conv" in study["variants"]
    assert any("head=spectral" in v for v in study["variants"].values())


def test_tiny_study_end_to_end_and_resume(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "seeds": [0],
                "baseline": "conv",
                "shared": [
                    *TINY,
                    "callbacks.panel=null",
                    "trainer.max_epochs=1",
                    "trainer.limit_train_batches=1",
                    "trainer.limit_val_batches=1",
                    "trainer.limit_test_batches=1",
                    "test=true",
                ],
                "eval_shared": [
                    "dataset.source.height=32",
                    "dataset.source.width=64",
                    "dataset.source.lengths={train: 16, val: 8, test: 8}",
                    "trainer.accelerator=cpu",
                    "trainer.limit_test_batches=1",
                    "callbacks.export=null",
                ],
                "variants": {
                    "conv": [],
                    "conv_lr": ["optimizer.lr=0.01"],
                    "conv_filter": {
                        "eval_of": "conv",
                        "overrides": ["postprocess=image_diffusion", "postprocess.iterations=3"],
                    },
                },
            },
            sort_keys=False,
        )
    )
    argv = [
        "--config",
        str(config),
        "--out-root",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
    ]
    runs = head_study.main(argv)
    assert [(r.variant, r.seed) for r in runs] == [("conv", 0), ("conv_lr", 0), ("conv_filter", 0)]
    # The evaluation-only variant scored conv's checkpoint with the filter, on test, and
    # reports conv's training cost.
    filtered = json.loads((tmp_path / "runs/tiny/conv_filter/seed0/final_metrics.json").read_text())
    assert runs[2].scores["mIoU"] == pytest.approx(filtered["test/mIoU"])
    assert runs[2].step_time == runs[0].step_time
    assert runs[2].scores != runs[0].scores
    for run in runs:
        assert 0 <= run.scores["mIoU"] <= 1 and run.step_time > 0 and run.peak_memory_mb > 50
        assert set(run.trimap) == {1, 2, 4, 8, 16}
    table = (tmp_path / "results" / "tiny.md").read_text()
    assert "| conv_lr | mIoU |" in table and "| n/a |" in table  # one pair: no t-test
    # The figures and the page come from cheeger.compare, under the study's variant names.
    for figure in ("trimap", "curves", "test_scores", "miou_vs_boundary_iou", "class_iou"):
        assert (tmp_path / "results" / f"tiny_{figure}.png").stat().st_size > 1000, figure
    page = (tmp_path / "results" / "tiny_comparison.md").read_text()
    assert "| conv_filter | 0 |" in page and "Baseline: conv." in page
    # A second invocation reads the finished runs instead of training them again.
    marker = tmp_path / "runs" / "tiny" / "conv" / "seed0" / "study.json"
    marker.write_text(json.dumps({"wall_s": 123.0}))
    again = head_study.main(argv)
    assert again[0].wall_s == 123.0 and again[0].scores == runs[0].scores


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            "dataset=cityscapes",
            "dataset.root=/data/cityscapes",
            "trainer=gpu",
            "trainer.max_epochs=60",
        ],
    ],
    ids=["cpu", "cityscapes_gpu"],
)
def test_every_study_run_composes_and_validates(tmp_path, extra):
    # The committed study and the Cityscapes/GPU form (docs/experiments.md) of the same command.
    from cheeger.run.config_schema import validate_config
    from tests.conftest import compose

    study = head_study.load_study(ROOT / "experiments" / "head_study.yaml")
    for name, overrides in study["variants"].items():
        if isinstance(overrides, dict):  # evaluation only: the eval config must compose
            evaluated = [*study["eval_shared"], *overrides["overrides"], "ckpt_path=x.ckpt"]
            cfg = compose("eval", evaluated, tmp_path / name)
            assert cfg.postprocess is not None
            continue
        cfg = compose("train", [*study["shared"], *extra, *overrides, "seed=1"], tmp_path / name)
        validate_config(cfg)
        assert cfg.seed == 1 and cfg.trainer.max_epochs == (60 if extra else 8)
        assert ("spectral" in name) == ("SpectralHead" in cfg.head._target_)
