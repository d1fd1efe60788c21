"""cheeger.run.loggers.CSVLogger: metrics.csv survives a resume in the same directory."""

from __future__ import annotations

import csv
from pathlib import Path

from cheeger.run.loggers import CSVLogger, KeepingExperimentWriter
from cheeger.run.runner import build_trainer
from cheeger.train import train
from tests.conftest import TINY, compose


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_writer_keeps_rows_before_the_resume_point_and_replaces_the_rest(tmp_path):
    first = KeepingExperimentWriter(str(tmp_path))
    for step in range(6):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    first.save()

    # A resumed process starts logging at step 4: rows 4 and 5 of the old one are replayed.
    second = KeepingExperimentWriter(str(tmp_path))
    second.log_metrics({"train/loss": 0.5, "val/mIoU": 0.25}, 4)
    second.save()
    second.log_metrics({"train/loss": 0.4}, 5)
    second.save()

    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/mIoU"]
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [float(row["train/loss"]) for row in rows] == [1.0, 0.5, 1 / 3, 0.25, 0.5, 0.4]
    assert rows[4]["val/mIoU"] == "0.25" and rows[3]["val/mIoU"] == ""


def test_continued_run_keeps_the_first_epochs(tmp_path):
    run = tmp_path / "run"
    limits = [
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "callbacks.panel=null",
        "callbacks.summary_plots=null",
    ]
    train(compose("train", [*TINY, *limits, "trainer.max_epochs=1"], run))
    # Continue in the same run directory for one more epoch.
    cfg = compose("train", [*TINY, *limits, "trainer.max_epochs=2", "ckpt_path=last"], run)
    assert isinstance(build_trainer(cfg).loggers[0], CSVLogger)
    train(cfg)
    _, rows = read_rows(run / "metrics.csv")
    val_epochs = [row["epoch"] for row in rows if row.get("val/mIoU")]
    assert val_epochs == ["0", "1"]  # Lightning's own CSV logger would keep only "1"
