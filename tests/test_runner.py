"""cheeger/runner.py pieces not covered by the end-to-end tests."""

from __future__ import annotations

import json
import math

from cheeger.runner import save_final_metrics


def test_final_metrics_are_strict_json_with_nan_as_null(tmp_path):
    path = save_final_metrics({"val/mIoU": 0.5, "val/bf": math.nan}, tmp_path / "run")
    assert path == tmp_path / "run" / "final_metrics.json"
    text = path.read_text()
    assert "NaN" not in text
    # parse_constant is only called for NaN/Infinity: strict JSON readers accept the file
    assert json.loads(text, parse_constant=lambda name: 1 / 0) == {"val/mIoU": 0.5, "val/bf": None}
