"""The offline W&B record reader against records framed here, and on a real run."""

from __future__ import annotations

import json
import struct

import pytest
from wandb.proto import wandb_internal_pb2

from cheeger.run import wandb_offline
from cheeger.run.wandb_offline import BLOCK_SIZE, read_offline_run, records


def _frame(payloads: list[bytes]) -> bytes:
    """A LevelDB-style log as wandb writes it, records split across 32 KiB blocks."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        first = True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < 7:
                out += b"\0" * left
                continue
            piece, payload = payload[: left - 7], payload[left - 7 :]
            last = not payload
            kind = 1 if first and last else 2 if first else 4 if last else 3
            out += struct.pack("<IHB", 0, len(piece), kind) + piece
            first = False
            if last:
                break
    return bytes(out)


def _history(step: int, value: float) -> bytes:
    record = wandb_internal_pb2.Record()
    for key, v in (("val/mIoU", value), ("trainer/global_step", step)):
        item = record.history.item.add()
        item.key = key
        item.value_json = json.dumps(v)
    return record.SerializeToString()


def test_records_spanning_blocks_come_back_whole(tmp_path):
    payloads = [b"a" * 10, b"b" * (3 * BLOCK_SIZE), b"c" * (BLOCK_SIZE - 20), b"d" * 5]
    path = tmp_path / "run-x.wandb"
    path.write_bytes(_frame(payloads))
    assert list(records(path)) == payloads


def test_a_partial_last_record_ends_the_read(tmp_path):
    data = _frame([b"a" * 100, b"b" * 100])
    path = tmp_path / "run-x.wandb"
    path.write_bytes(data[:-30])
    assert list(records(path)) == [b"a" * 100]


def test_a_file_without_the_header_is_refused(tmp_path):
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"not wandb")
    with pytest.raises(ValueError, match="not a W&B run file"):
        list(records(path))


def test_history_config_and_curves(tmp_path):
    config = wandb_internal_pb2.Record()
    item = config.config.update.add()
    item.key, item.value_json = "head_variant", json.dumps({"value": "conv"})
    path = tmp_path / "run-x.wandb"
    payloads = [config.SerializeToString(), _history(3, 0.25), _history(7, float("nan"))]
    payloads.append(_history(9, 0.5))
    path.write_bytes(_frame(payloads))
    run = read_offline_run(tmp_path)
    assert run.config == {"head_variant": "conv"}
    assert run.curve("val/mIoU") == [(3.0, 0.25), (9.0, 0.5)]  # nan left out
    assert {"val/mIoU", "trainer/global_step"} <= run.history_keys


def test_a_run_directory_without_a_record_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run-\\*.wandb"):
        wandb_offline.read_offline_run(tmp_path)
