"""cheeger.compare on real tiny sweeps: variants, the page, the tables, bad run dirs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cheeger import compare
from cheeger.run import keys

SCORES = [keys.metric("test", s) for s in keys.SCORES]


def _final(run_dir):
    return json.loads((run_dir / "final_metrics.json").read_text())


def _table(markdown: str, title: str) -> list[list[str]]:
    """The rows of the markdown table under ``## title``."""
    block = markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def test_two_variants_page_and_tables_equal_final_metrics(head_sweeps, tmp_path):
    out = tmp_path / "cmp"
    result = compare.main(
        [str(head_sweeps["conv"]), str(head_sweeps["spectral"]), "--out", str(out)]
    )
    assert result.baseline == "conv"  # the conv head's variant, found from the configs
    assert set(result.figures) == set(compare.FIGURES)
    for path in result.figures.values():
        assert path.read_bytes().startswith(b"\x89PNG")
    page = result.html.read_text()
    # Self-contained: every figure embedded, nothing fetched from elsewhere.
    assert page.count('src="data:image/png;base64,') == len(result.figures)
    assert "http://" not in page and "https://" not in page
    markdown = result.markdown.read_text()

    runs = _table(markdown, "Runs (final_metrics.json)")
    assert len(runs) == 4
    variants = {row[0] for row in runs}
    assert variants == {"conv", "head=spectral loss=spectral"}
    for _, seed, directory, *values in runs:
        final = _final(Path(directory))
        assert values == [f"{final[key]:.4f}" for key in SCORES], directory
        assert int(seed) == int(directory.rsplit("/", 1)[1])  # jobs 0, 1 ran seeds 0, 1

    # Paired differences recomputed here from the files.
    conv = {s: _final(head_sweeps["conv"] / str(s)) for s in (0, 1)}
    spectral = {s: _final(head_sweeps["spectral"] / str(s)) for s in (0, 1)}
    paired = _table(markdown, "Paired over seeds: variant - conv")
    assert [row[1] for row in paired] == ["mIoU", "Boundary IoU", "BF"]
    for row, key in zip(paired, SCORES, strict=True):
        diffs = [spectral[s][key] - conv[s][key] for s in (0, 1)]
        assert row[3] == ", ".join(f"{d:+.4f}" for d in diffs)
        assert row[4].startswith(f"{np.mean(diffs):+.4f}")
        if np.ptp(diffs) > 1e-12:
            p = stats.ttest_rel([spectral[s][key] for s in (0, 1)], [conv[s][key] for s in (0, 1)])
            assert row[5] == f"{p.pvalue:.3f}"

    scores = _table(markdown, "Test scores (mean ± std over seeds)")
    conv_row = next(row for row in scores if row[0] == "conv")
    miou = [conv[s][keys.metric("test", keys.MIOU)] for s in (0, 1)]
    assert conv_row[3] == f"{np.mean(miou):.4f} ± {np.std(miou, ddof=1):.4f}"
    assert conv_row[1] == "conv"
    assert "spectral/lanczos/temper/embedding" in {row[1] for row in scores}


def test_curves_are_the_csv_logs_or_else_the_offline_wandb_history(head_sweeps, tmp_path):
    source = head_sweeps["conv"] / "0"
    from_csv = compare.load_run(source)
    curve = from_csv.curves[keys.metric("val", keys.MIOU)]
    assert len(curve) == 2  # two validation epochs
    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    (copy / "metrics.csv").unlink()
    from_wandb = compare.load_run(copy)
    for key, points in from_csv.curves.items():
        other = from_wandb.curves[key]
        assert [s for s, _ in other] == [s for s, _ in points]
        np.testing.assert_allclose([v for _, v in other], [v for _, v in points], rtol=1e-6)


def test_missing_or_corrupt_run_dirs_are_named_and_skipped(head_sweeps, tmp_path):
    root = tmp_path / "runs"
    for name in ("good", "corrupt", "unfinished", "bad_csv"):
        shutil.copytree(head_sweeps["conv"] / "0", root / name)
    (root / "corrupt" / "final_metrics.json").write_text("{not json")
    (root / "unfinished" / "final_metrics.json").unlink()
    (root / "bad_csv" / "metrics.csv").write_bytes(b"\xff\xfe\x00broken")
    with pytest.warns(UserWarning) as caught:
        runs = compare.find_runs([root])
    assert [run.directory.name for run in runs] == ["good"]
    messages = "\n".join(str(w.message) for w in caught)
    for name in ("corrupt", "unfinished", "bad_csv"):
        assert re.search(rf"skipping run .*{name}", messages), messages
    assert "final_metrics.json: missing" in messages


def test_an_empty_selection_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no run with a readable final_metrics.json under"):
        compare.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="does not exist"):
        compare.main([str(tmp_path / "nowhere")])


def test_an_unknown_baseline_lists_the_variants(head_sweeps, tmp_path):
    with pytest.raises(SystemExit, match=r"--baseline 'mlp' is not a variant.*conv"):
        compare.main([str(head_sweeps["conv"]), "--baseline", "mlp", "--out", str(tmp_path)])


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = compare.mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(math.sqrt(((0.2**2) * 2) / 2))  # ddof = 1
    assert math.isnan(compare.mean_std([0.4])[1])


def test_mean_pm_std_leaves_missing_values_out():
    assert compare.mean_pm_std([0.5, 0.7, 0.9], 2) == "0.70 ± 0.20"
    assert compare.mean_pm_std([0.5, math.nan, 0.9], 1) == "0.7 ± 0.3"  # NaN: a run without it
    assert compare.mean_pm_std([0.25, math.nan], 3) == "0.250"
    assert compare.mean_pm_std([math.nan, math.nan]) == "-"


def test_paired_t_test_matches_the_textbook_formula():
    base = {0: 0.50, 1: 0.55, 2: 0.61, 3: 0.58}
    other = {0: 0.53, 1: 0.56, 2: 0.66, 3: 0.60, 9: 0.99}  # seed 9 has no partner
    result = compare.paired(base, other)
    d = np.array([0.03, 0.01, 0.05, 0.02])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert result["seeds"] == [0, 1, 2, 3]
    np.testing.assert_allclose(result["diffs"], d, atol=1e-12)
    assert result["mean"] == pytest.approx(d.mean())
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), df=len(d) - 1))
    # equal differences: no variance, no test
    assert math.isnan(compare.paired({0: 0.1, 1: 0.2}, {0: 0.2, 1: 0.3})["p"])
