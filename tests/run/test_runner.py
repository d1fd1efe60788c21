"""cheeger.run.runner: building the Trainer a config names, and the files a run leaves."""

from __future__ import annotations

import json
import math

from lightning.pytorch.callbacks import ProgressBar

from cheeger.run.runner import build_trainer, save_final_metrics
from tests.conftest import compose


def _progress_bars(overrides: list[str], tmp_path) -> list:
    cfg = compose("train", ["trainer.accelerator=cpu", "trainer.devices=1", *overrides], tmp_path)
    return [c for c in build_trainer(cfg).callbacks if isinstance(c, ProgressBar)]


def test_progress_bar_off_drops_the_callback(tmp_path):
    # Lightning refuses enable_progress_bar=False with a progress-bar callback in the list.
    assert _progress_bars(["trainer.enable_progress_bar=false"], tmp_path) == []


def test_progress_bar_on_keeps_the_configured_callback(tmp_path):
    bars = _progress_bars([], tmp_path)
    assert len(bars) == 1 and bars[0].refresh_rate == 5


def test_final_metrics_are_strict_json_with_nan_as_null(tmp_path):
    path = save_final_metrics({"val/mIoU": 0.5, "val/bf": math.nan}, tmp_path / "run")
    assert path == tmp_path / "run" / "final_metrics.json"
    text = path.read_text()
    assert "NaN" not in text
    # parse_constant is only called for NaN/Infinity: strict JSON readers accept the file
    assert json.loads(text, parse_constant=lambda name: 1 / 0) == {"val/mIoU": 0.5, "val/bf": None}
