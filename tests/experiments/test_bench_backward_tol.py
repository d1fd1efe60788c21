"""experiments/bench_backward_tol.py: every tolerance row, errors that follow the
tolerance, and the truncated gradient as far off as the docs say."""

from __future__ import annotations

import importlib
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = importlib.import_module("bench_backward_tol")


def rows(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0] not in ("backward_tol", "---"):
            out[cells[0]] = cells
    return out


def test_quick_run_writes_a_row_per_tolerance_and_the_truncated_contrast(tmp_path):
    out = tmp_path / "tol.md"
    text = bench.main(["--quick", "--out", str(out)])
    assert out.read_text() == text and "### 48x48 (2,304 graph nodes)" in text
    table = rows(text)
    assert list(table) == ["null (= tol, 1e-4)", "0.001", "0.003", "0.01", "0.03", "truncated"]
    feature_error = {label: float(cells[5]) for label, cells in table.items()}
    # The error tracks the tolerance (within a factor of a few) and the default is accurate.
    assert feature_error["null (= tol, 1e-4)"] < 1e-3
    for tol in ("0.001", "0.003", "0.01", "0.03"):
        assert feature_error[tol] < 10 * float(tol), (tol, feature_error[tol])
    iterations = [int(table[label][1]) for label in list(table)[:5]]
    assert iterations == sorted(iterations, reverse=True) and iterations[-1] < iterations[0]
    # Dropping the out-of-subspace term is far worse than any tolerance measured.
    assert feature_error["truncated"] > 0.3 and table["truncated"][1] == "-"
    assert float(table["null (= tol, 1e-4)"][4]) == 1.0
