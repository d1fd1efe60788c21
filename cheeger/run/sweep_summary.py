"""The summary of a Hydra multirun: one row per job, its overrides -> its final metrics.

``MultirunSummary`` is a Hydra callback (registered in ``conf/hydra/default.yaml``).
In a multirun it writes ``job.json`` into every job directory when the job starts
(status ``started``) and again when it ends (``completed`` or ``failed`` with the
error), then rewrites ``summary.md`` and ``summary.csv`` in the sweep directory from
every ``job.json`` there and the ``final_metrics.json`` that ``cheeger.train`` leaves
next to it. The table is printed when the multirun ends.

A job that raised shows as ``failed``; one killed before it could report (SIGKILL,
a SLURM time limit) stays ``started``. Rewriting the files after each job keeps them
complete when Hydra stops a sweep on a failed job before ``on_multirun_end`` runs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cheeger.run.runner import load_final_metrics

log = logging.getLogger("cheeger.run.sweep_summary")

JOB_FILE = "job.json"
SUMMARY_STEM = "summary"


@dataclass(frozen=True)
class JobResult:
    """One job of a sweep as read back from its directory."""

    num: int
    overrides: tuple[str, ...]
    status: str  # started | completed | failed
    metrics: dict[str, float | None]
    error: str | None = None


def write_job_file(
    job_dir: Path, num: int, overrides: list[str], status: str, error: str | None = None
) -> Path:
    """Write ``job_dir/job.json`` (job number, its overrides, status, error message)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"num": num, "overrides": list(overrides), "status": status, "error": error}
    path = job_dir / JOB_FILE
    _replace_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job under ``sweep_dir`` (any subdir depth) that wrote a ``job.json``, by number."""
    jobs = []
    for path in sweep_dir.rglob(JOB_FILE):
        record = json.loads(path.read_text())
        metrics = load_final_metrics(path.parent)
        jobs.append(
            JobResult(
                num=int(record["num"]),
                overrides=tuple(record["overrides"]),
                status=str(record["status"]),
                metrics=metrics,
                error=record.get("error"),
            )
        )
    return sorted(jobs, key=lambda job: job.num)


def swept_overrides(jobs: list[JobResult]) -> tuple[list[str], dict[int, list[str]]]:
    """Split the overrides into those every job shares and, per job number, the others.

    The shared ones (the fixed part of the command line) would repeat on every row.
    """
    if not jobs:
        return [], {}
    shared = [o for o in jobs[0].overrides if all(o in job.overrides for job in jobs[1:])]
    if len(jobs) == 1:
        shared = []  # nothing to compare against: show the job's overrides on its row
    own = {job.num: [o for o in job.overrides if o not in shared] for job in jobs}
    return shared, own


def summary_rows(jobs: list[JobResult], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings): job, status, swept overrides, each metric, error."""
    _, own = swept_overrides(jobs)
    header = ["job", "status", "overrides", *metrics, "error"]
    rows = []
    for job in jobs:
        values = [_format_value(job.metrics.get(name)) for name in metrics]
        rows.append(
            [str(job.num), job.status, " ".join(own[job.num]), *values, _one_line(job.error)]
        )
    return header, rows


def best_job(jobs: list[JobResult], metric: str) -> JobResult | None:
    """The completed job with the highest finite ``metric`` (None when there is none)."""
    scored = [
        job
        for job in jobs
        if job.status == "completed"
        and job.metrics.get(metric) is not None
        and math.isfinite(job.metrics[metric])
    ]
    return max(scored, key=lambda job: job.metrics[metric]) if scored else None


def markdown_summary(jobs: list[JobResult], metrics: list[str]) -> str:
    """The sweep as Markdown: shared overrides, the table, counts and the best job."""
    shared, _ = swept_overrides(jobs)
    header, rows = summary_rows(jobs, metrics)
    lines = []
    if shared:
        lines += ["Shared overrides: `" + " ".join(shared) + "`", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    counts = {status: sum(job.status == status for job in jobs) for status in _STATUSES}
    lines += ["", ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no jobs"]
    if metrics and (best := best_job(jobs, metrics[0])) is not None:
        lines.append(
            f"best {metrics[0]}: job {best.num} ({_format_value(best.metrics[metrics[0]])})"
        )
    return "\n".join(lines) + "\n"


def csv_summary(jobs: list[JobResult], metrics: list[str]) -> str:
    """The table as CSV, with every override of each job (shared ones included)."""
    header, rows = summary_rows(jobs, metrics)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for job, row in zip(jobs, rows, strict=True):
        writer.writerow([row[0], row[1], " ".join(job.overrides), *row[3:]])
    return buffer.getvalue()


def write_summary(sweep_dir: Path, metrics: list[str]) -> str:
    """Rewrite ``summary.md`` and ``summary.csv`` in ``sweep_dir``; returns the Markdown."""
    jobs = read_jobs(sweep_dir)
    text = markdown_summary(jobs, metrics)
    _replace_text(sweep_dir / f"{SUMMARY_STEM}.md", text)
    _replace_text(sweep_dir / f"{SUMMARY_STEM}.csv", csv_summary(jobs, metrics))
    return text


class MultirunSummary(Callback):
    """Hydra callback: record each multirun job, tabulate the sweep (see the module doc).

    Args:
        metrics: final metric names shown per job; the first one picks the best job.
    """

    def __init__(self, metrics: list[str]) -> None:
        self.metrics = [str(m) for m in metrics]
        if not self.metrics:
            raise ValueError("MultirunSummary: `metrics` must name at least one metric, found []")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun(config):
            write_job_file(_job_dir(config), _job_num(config), _task_overrides(config), "started")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        error = None
        if job_return.status == JobStatus.COMPLETED:
            status = "completed"
        else:
            status = "failed"
            # The public `return_value` re-raises the job's exception; read it instead.
            exception = getattr(job_return, "_return_value", None)
            error = f"{type(exception).__name__}: {exception}" if exception else "unknown error"
        write_job_file(_job_dir(config), _job_num(config), _task_overrides(config), status, error)
        sweep_dir = Path(config.hydra.sweep.dir)
        write_summary(sweep_dir, self.metrics)
        if error is not None:
            # Hydra's basic sweeper stops after this batch without calling on_multirun_end.
            log.error(
                "job %d failed (%s); summary so far: %s",
                _job_num(config),
                _one_line(error),
                sweep_dir / f"{SUMMARY_STEM}.md",
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        text = write_summary(sweep_dir, self.metrics)
        print(f"\nSweep summary ({sweep_dir / (SUMMARY_STEM + '.md')}):\n\n{text}", flush=True)


_STATUSES = ("completed", "failed", "started")


def _one_line(error: str | None, limit: int = 160) -> str:
    """A multi-line error message on one table cell, at most ``limit`` characters."""
    text = " ".join((error or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_value(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _job_dir(config: DictConfig) -> Path:
    return Path(config.hydra.runtime.output_dir)


def _job_num(config: DictConfig) -> int:
    return int(config.hydra.job.num)


def _task_overrides(config: DictConfig) -> list[str]:
    return [str(o) for o in config.hydra.overrides.task]


def _replace_text(path: Path, text: str) -> None:
    # Jobs on a cluster finish concurrently: write aside, then rename over the old file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
