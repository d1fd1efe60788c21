"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) without the network.

A run logged with ``WANDB_MODE=offline`` (cheeger's default without an API key) keeps
its history, config and summary in one record file until ``wandb sync`` uploads it.
``read_offline_run`` parses that file so that ``cheeger.compare`` can draw the run's
learning curves on a machine that never goes online, and the tests can check what a run
really logged.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, a magic number, a version),
then 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, type: full,
first, middle or last piece of a record); every record is a ``wandb.proto`` ``Record``.
A run still writing (or killed) may end in a partial record: reading stops there.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B"
HEADER_SIZE = 7
BLOCK_SIZE = 32768
CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline W&B run logged.

    Attributes:
        path: the ``run-*.wandb`` file.
        history: one dict per ``run.log`` call, key -> value (media as their JSON dicts).
        config: the run config, flat key -> value (cheeger logs it flat, dotted).
        summary: the run summary, key -> value.
    """

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def history_keys(self) -> set[str]:
        """Every key the history holds (metrics and media)."""
        return {key for row in self.history for key in row}

    def curve(self, key: str, step_key: str = "trainer/global_step") -> list[tuple[float, float]]:
        """(step, value) of every finite scalar logged under ``key``, in logging order."""
        points = []
        for row in self.history:
            value, step = row.get(key), row.get(step_key, row.get("_step"))
            if _is_number(value) and _is_number(step) and math.isfinite(value):
                points.append((float(step), float(value)))
        return points


def records(path: str | Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, in order.

    Raises:
        ValueError: naming the file when it does not start with the W&B header.
    """
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B run file (expected the header {HEADER!r})")
    position, pending = HEADER_SIZE, b""
    while position + CHUNK_HEADER.size <= len(data):
        left = BLOCK_SIZE - position % BLOCK_SIZE
        if left < CHUNK_HEADER.size:  # the block's zero padding
            position += left
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        position += CHUNK_HEADER.size
        if kind == 0 and length == 0:  # zero-filled rest of a block
            position += left - CHUNK_HEADER.size
            continue
        if position + length > len(data):
            return  # a record still being written
        chunk = data[position : position + length]
        position += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse a ``run-*.wandb`` file (or the ``offline-run-*`` directory holding one)."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if not found:
            raise FileNotFoundError(f"{path}: no run-*.wandb file in this W&B run directory")
        path = found[0]
    run = OfflineRun(path)
    for data in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "config":
            run.config.update(_items(record.config.update))
            for item in record.config.remove:
                run.config.pop(_key(item), None)
        elif kind == "run":
            run.config.update(_items(record.run.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
    run.config = {key: _unwrap(value) for key, value in run.config.items()}
    return run


def offline_runs(directory: str | Path) -> list[Path]:
    """The ``run-*.wandb`` files of the offline W&B runs under a run directory, oldest first."""
    return sorted(Path(directory).glob("wandb/offline-run-*/run-*.wandb"))


def _items(items) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        try:
            value = json.loads(item.value_json)
        except json.JSONDecodeError:
            value = item.value_json
        key = _key(item)
        if item.nested_key and len(item.nested_key) > 1:
            # A nested value (media): file it under its first key.
            out.setdefault(item.nested_key[0], {})
            if isinstance(out[item.nested_key[0]], dict):
                out[item.nested_key[0]]["/".join(item.nested_key[1:])] = value
            continue
        out[key] = value
    return out


def _key(item) -> str:
    return item.key or (item.nested_key[0] if item.nested_key else "")


def _unwrap(value: Any) -> Any:
    # wandb stores config values as {"value": ..., "desc": ...}.
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
