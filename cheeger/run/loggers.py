"""Experiment loggers with safe defaults.

``CSVLogger`` is Lightning's CSV logger, except that a run resumed in its own
directory keeps the ``metrics.csv`` it had (Lightning's deletes it): rows logged
before the resume point are kept, rows at or after it (the part of the interrupted
run that is replayed) are replaced by the new ones.

``wandb_logger`` builds Lightning's ``WandbLogger`` but never lets a missing
API key or a missing network stop a run: without a key (``WANDB_API_KEY`` or a
``wandb login`` entry in ~/.netrc) it switches to offline mode with one warning;
the run can be uploaded later with ``wandb sync <dir>``. ``WANDB_MODE=offline``
or ``disabled`` in the environment is honoured as is.
"""

from __future__ import annotations

import csv
import netrc
import os
import warnings
from collections.abc import Sequence
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class KeepingExperimentWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, keeping an existing ``metrics.csv``.

    The old rows are read when the writer is created; at the first save, those whose
    ``step`` is at or after the first step this process logs are dropped (a resumed run
    logs them again), the rest are written back under the union of old and new keys,
    and saving goes on as usual (appending).
    """

    def __init__(self, log_dir: str) -> None:
        self._previous: list[dict[str, str]] | None = None
        self._previous_keys: list[str] = []
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                reader = csv.DictReader(handle)
                self._previous = list(reader)
                self._previous_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._previous is not None and self.metrics:
            first = min(float(row["step"]) for row in self.metrics)
            kept = [
                row for row in self._previous if row.get("step") and float(row["step"]) < first
            ]
            keys = set(self._previous_keys).union(*self.metrics)
            self.metrics_keys = sorted(keys)
            partial = f"{self.metrics_file_path}.partial"
            with self._fs.open(partial, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(partial, self.metrics_file_path)
            self._previous = None
        super().save()


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose ``metrics.csv`` survives a resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> KeepingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_api_key_available() -> bool:
    """True if an API key is set in the environment or stored by ``wandb login``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host or "api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_logger(
    project: str = "cheeger",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    offline: bool = False,
    log_model: bool = False,
    entity: str | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` that falls back to offline mode when it cannot go online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if (
        not offline
        and mode not in ("offline", "disabled", "dryrun")
        and not wandb_api_key_available()
    ):
        warnings.warn(
            "logger.wandb: no W&B API key found (WANDB_API_KEY or `wandb login`); "
            f"logging offline under {save_dir}/wandb. Upload later with `wandb sync`.",
            stacklevel=2,
        )
        offline = True
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        tags=list(tags) if tags else None,
        offline=offline,
        log_model=log_model,
        entity=entity,
    )
