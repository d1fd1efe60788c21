"""Multirun summary: table building on hand-written job dirs, the Hydra hooks, a real sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from cheeger.run.sweep_summary import (
    MultirunSummary,
    best_job,
    read_jobs,
    summary_rows,
    swept_overrides,
    write_summary,
)
from tests.conftest import TINY, run_train_cli

METRICS = ["val/mIoU", "val/boundary_iou"]


def fake_job(sweep: Path, subdir: str, num: int, overrides, status, metrics=None, error=None):
    """A job directory as a sweep leaves it, written by hand (not by the code under test)."""
    job_dir = sweep / subdir
    job_dir.mkdir(parents=True)
    record = {"num": num, "overrides": overrides, "status": status, "error": error}
    (job_dir / "job.json").write_text(json.dumps(record))
    if metrics is not None:
        (job_dir / "final_metrics.json").write_text(json.dumps(metrics))
    return job_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    # Written out of order, job 10 in a nested subdir: rows come back sorted by number.
    fake_job(root, "10/a", 10, ["model=unet_tiny", "k=32"], "started")
    fake_job(
        root,
        "0",
        0,
        ["model=unet_tiny", "k=8"],
        "completed",
        {"val/mIoU": 0.25, "val/boundary_iou": 0.125, "train/loss": 1.5},
    )
    fake_job(root, "2", 2, ["model=unet_tiny", "k=16"], "completed", {"val/mIoU": 0.5})
    fake_job(
        root, "1", 1, ["model=unet_tiny", "k=12"], "failed", error="ValueError: bad k\n  details"
    )
    return root


def test_rows_one_per_job_with_swept_overrides_metrics_and_failures(sweep):
    jobs = read_jobs(sweep)
    assert [job.num for job in jobs] == [0, 1, 2, 10]
    shared, own = swept_overrides(jobs)
    assert shared == ["model=unet_tiny"]
    assert own == {0: ["k=8"], 1: ["k=12"], 2: ["k=16"], 10: ["k=32"]}
    header, rows = summary_rows(jobs, METRICS)
    assert header == ["job", "status", "overrides", "val/mIoU", "val/boundary_iou", "error"]
    assert rows == [
        ["0", "completed", "k=8", "0.2500", "0.1250", ""],
        ["1", "failed", "k=12", "", "", "ValueError: bad k details"],
        ["2", "completed", "k=16", "0.5000", "", ""],  # metric missing -> empty cell
        ["10", "started", "k=32", "", "", ""],  # killed before it could report
    ]
    assert best_job(jobs, "val/mIoU").num == 2
    assert best_job(jobs, "val/bf") is None


def test_summary_files_list_every_job(sweep):
    text = write_summary(sweep, METRICS)
    assert (sweep / "summary.md").read_text() == text
    lines = text.splitlines()
    assert lines[0] == "Shared overrides: `model=unet_tiny`"
    assert "| 1 | failed | k=12 |  |  | ValueError: bad k details |" in lines
    assert "2 completed, 1 failed, 1 started" in lines
    assert lines[-1] == "best val/mIoU: job 2 (0.5000)"
    with open(sweep / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["job"] for row in table] == ["0", "1", "2", "10"]
    assert table[0]["overrides"] == "model=unet_tiny k=8"  # the CSV keeps every override
    assert float(table[0]["val/mIoU"]) == 0.25 and table[1]["status"] == "failed"


def test_a_single_job_shows_its_own_overrides(tmp_path):
    fake_job(tmp_path, "0", 0, ["k=8", "knn=4"], "completed", {"val/mIoU": 0.1})
    _, rows = summary_rows(read_jobs(tmp_path), METRICS)
    assert rows[0][2] == "k=8 knn=4"


def hydra_config(tmp_path: Path, num: int, mode: RunMode = RunMode.MULTIRUN):
    """The parts of a job's config (hydra node included) that the callback reads."""
    return OmegaConf.create(
        {
            "hydra": {
                "mode": mode,
                "sweep": {"dir": str(tmp_path)},
                "runtime": {"output_dir": str(tmp_path / str(num))},
                "job": {"num": num},
                "overrides": {"task": ["model=unet_tiny", f"seed={num}"]},
            }
        }
    )


def test_callback_records_started_completed_and_failed_jobs(tmp_path, capsys):
    callback = MultirunSummary(METRICS)
    ok, bad = hydra_config(tmp_path, 0), hydra_config(tmp_path, 1)
    callback.on_job_start(ok, task_function=None)
    callback.on_job_start(bad, task_function=None)
    assert [job.status for job in read_jobs(tmp_path)] == ["started", "started"]

    (tmp_path / "0" / "final_metrics.json").write_text('{"val/mIoU": 0.75}')
    callback.on_job_end(ok, JobReturn(status=JobStatus.COMPLETED, _return_value=0.75))
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("solver diverged"))
    callback.on_job_end(bad, failed)
    # Already on disk before the multirun ends (Hydra skips on_multirun_end after a failure).
    summary = (tmp_path / "summary.md").read_text()
    assert "| 0 | completed | seed=0 | 0.7500 |  |  |" in summary
    assert "| 1 | failed | seed=1 |  |  | RuntimeError: solver diverged |" in summary
    assert json.loads((tmp_path / "1" / "job.json").read_text())["status"] == "failed"

    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert summary in capsys.readouterr().out


def test_callback_does_nothing_in_a_single_run(tmp_path):
    callback = MultirunSummary(METRICS)
    config = hydra_config(tmp_path, 0, RunMode.RUN)
    callback.on_job_start(config, task_function=None)
    callback.on_job_end(config, JobReturn(status=JobStatus.COMPLETED, _return_value=0.5))
    assert list(tmp_path.iterdir()) == []


def test_callback_needs_a_metric():
    with pytest.raises(ValueError, match="metrics"):
        MultirunSummary([])


def test_real_multirun_writes_a_row_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train_cli(
        "-m",
        *TINY,
        "debug=fast_dev_run",
        "callbacks.panel=null",
        "callbacks.summary_plots=null",
        "optimizer.lr=0.003,0.01",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(sweep / "summary.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["job"], row["status"]) for row in table] == [
        ("0", "completed"),
        ("1", "completed"),
    ]
    for row, lr in zip(table, ("0.003", "0.01"), strict=True):
        assert row["overrides"].endswith(f"optimizer.lr={lr}")
        logged = json.loads((sweep / row["job"] / "final_metrics.json").read_text())
        for name in METRICS:
            assert float(row[name]) == pytest.approx(logged[name], abs=5e-5)
    summary = (sweep / "summary.md").read_text()
    assert "| 0 | completed | optimizer.lr=0.003 |" in summary
    assert "| 1 | completed | optimizer.lr=0.01 |" in summary
    assert summary in done.stdout  # printed at the end of the sweep
