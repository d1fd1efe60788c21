"""Checkpoints that are never half-written.

Lightning's default IO writes straight to the target path, so a process killed
while saving (pre-emption, OOM killer) can leave a truncated ``last.ckpt`` that
breaks the resume it was meant for. ``AtomicCheckpointIO`` writes to a temporary
file in the same directory, flushes it to disk and renames it over the target:
a reader sees either the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose ``save_checkpoint`` is atomic (see module doc)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO does not take storage_options, found {storage_options!r}"
            )
        atomic_save(checkpoint, path)
