from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from cheeger.module import load_module
from cheeger.predict import predict
from cheeger.run.checkpoint import (
    AtomicCheckpointIO,
    CorruptCheckpointError,
    LastCheckpoint,
    NonFiniteCheckpointError,
    UntrustedCheckpointError,
    atomic_save,
    read_checkpoint,
    rng_states,
    set_rng_states,
)
from cheeger.run.runner import resolve_ckpt_path
from cheeger.train import train
from tests.conftest import ROOT, compose
from tests.faults import kill_at_marker


def test_atomic_save_roundtrip_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["a"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while writing")

    try:
        atomic_save({"step": 2, "bad": Unpicklable()}, path)
    except RuntimeError:
        pass
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_non_finite_model_state_is_never_written(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "step": 1}, path)
    poisoned = {"w": torch.tensor([1.0, float("nan")]), "bn.running_var": torch.full((3,), 1e38)}
    poisoned["bn.running_var"] *= 10  # overflows to inf
    with pytest.raises(NonFiniteCheckpointError) as raised:
        io.save_checkpoint({"state_dict": poisoned, "step": 2}, path)
    assert f"refusing to write {path}" in str(raised.value)
    assert "non-finite values in w, bn.running_var" in str(raised.value)
    assert torch.load(path)["step"] == 1  # the good file stays
    # Integer buffers (batch counts) and non-tensor entries are not floats to check.
    state = {"n": torch.tensor(3), "w": torch.zeros(1), "meta": "x"}
    io.save_checkpoint({"state_dict": state, "step": 3}, path)
    assert torch.load(path)["step"] == 3


def test_kill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """SIGKILL in the middle of a save: the target still holds the previous checkpoint."""
    path, marker = tmp_path / "last.ckpt", tmp_path / "writing"
    child = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from cheeger.run.checkpoint import atomic_save

        class SlowToPickle:
            def __reduce__(self):
                Path({str(marker)!r}).write_text("now")
                time.sleep(120)
                return (int, (0,))

        atomic_save({{"step": 1}}, {str(path)!r})
        atomic_save({{"step": 2, "blob": bytes(1 << 20), "slow": SlowToPickle()}}, {str(path)!r})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT)
    kill_at_marker(process, marker, timeout=120)
    assert torch.load(path)["step"] == 1
    # The half-written temporary file is left behind, next to the intact checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["last.ckpt", "writing", f".last.ckpt.tmp-{process.pid}"]
    )


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_save({"rng": rng_states()}, tmp_path / "rng.ckpt")
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_last_checkpoint_is_written_at_steps_epoch_ends_and_holds_the_end(
    compose_train, monkeypatch
):
    saved: list[tuple[str, int]] = []
    original = L.Trainer.save_checkpoint

    def spy(trainer, filepath, *args, **kwargs):
        saved.append((Path(filepath).name, trainer.global_step))
        return original(trainer, filepath, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", spy)
    cfg = compose_train(
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "callbacks.panel=null",
        "callbacks.last_checkpoint.every_n_train_steps=3",
    )
    train(cfg)
    last = [step for name, step in saved if name == "last.ckpt"]
    assert last == [3, 4, 6, 8]  # every 3 steps and both epoch ends (4 batches an epoch)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 8 and state["SegmentationDataModule"]["epoch"] == 2


def test_last_checkpoint_rejects_a_negative_interval():
    with pytest.raises(ValueError, match="callbacks.last_checkpoint.every_n_train_steps"):
        LastCheckpoint("ckpts", every_n_train_steps=-1)


def test_ckpt_path_last_is_the_runs_own_last_checkpoint(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert resolve_ckpt_path("last", last) == "last"  # none yet: Lightning's own search
    atomic_save({}, last)
    assert resolve_ckpt_path("last", last) == str(last)
    assert resolve_ckpt_path(str(tmp_path)) == str(last)


# ----------------------------------------------------------------------------- reading


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a trace on disk if loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _predict_cfg(ckpt: Path, tmp_path: Path):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    return compose(
        "predict",
        [f"ckpt_path={ckpt}", f"input={image}", f"output={tmp_path / 'out'}"],
        tmp_path / "run",
    )


def test_pickle_payload_is_refused_by_eval_predict_and_resume(tiny_module, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {
            "state_dict": tiny_module.state_dict(),
            "cheeger_model_config": tiny_module.model_config,
            "extra": _Payload(marker),
        },
        ckpt,
    )
    message = "untrusted checkpoint content .*evil.ckpt.*global io.open.*nothing was executed"
    with pytest.raises(UntrustedCheckpointError, match=message):
        load_module(str(ckpt))
    with pytest.raises(UntrustedCheckpointError, match=message):
        predict(_predict_cfg(ckpt, tmp_path))
    with pytest.raises(UntrustedCheckpointError, match=message):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cheeger_checkpoint_reads_as_data(tiny_checkpoint):
    checkpoint = read_checkpoint(tiny_checkpoint)
    assert set(checkpoint) == {"state_dict", "cheeger_model_config"}
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_corrupt_checkpoint_is_named_as_such(kind, tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    content = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(0).bytes(4096),
    }[kind]
    bad = tmp_path / f"{kind}.ckpt"
    bad.write_bytes(content)
    message = f"corrupt checkpoint .*{kind}.ckpt' \\({len(content)} bytes\\)"
    with pytest.raises(CorruptCheckpointError, match=message):
        load_module(str(bad))
    with pytest.raises(CorruptCheckpointError, match=message):
        AtomicCheckpointIO().load_checkpoint(bad)


def test_checkpoint_that_is_not_a_dict_is_corrupt(tmp_path):
    path = tmp_path / "list.ckpt"
    torch.save([1, 2], path)
    with pytest.raises(CorruptCheckpointError, match="expected a dict .* found list"):
        read_checkpoint(path)


def _with_config(module, path: Path, **changes) -> Path:
    config = {**module.model_config, **changes}
    torch.save({"state_dict": module.state_dict(), "cheeger_model_config": config}, path)
    return path


@pytest.mark.parametrize(
    "target",
    [
        "pathlib.Path.write_text",  # outside cheeger
        "cheeger.models.solvers.torch.save",  # reached through a cheeger module
        "cheeger.run.checkpoint.Path.write_text",  # a class cheeger imports, not defines
    ],
)
def test_injected_target_is_refused_by_eval_and_predict(target, tiny_module, tmp_path):
    marker = tmp_path / "written.txt"
    head = {"_target_": target, "self": str(marker), "data": "pwned"}
    ckpt = _with_config(tiny_module, tmp_path / "injected.ckpt", head=head)
    message = f"untrusted checkpoint content .*cheeger_model_config.head._target_ = '{target}'"
    with pytest.raises(UntrustedCheckpointError, match=message):
        load_module(str(ckpt))
    with pytest.raises(UntrustedCheckpointError, match=message):
        predict(_predict_cfg(ckpt, tmp_path))
    assert not marker.exists()


def test_stored_optimizer_is_ignored_and_unknown_keys_refused(tiny_module, tmp_path):
    marker = tmp_path / "written.txt"
    optimizer = {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "x"}
    ckpt = _with_config(tiny_module, tmp_path / "opt.ckpt", optimizer=optimizer)
    module = load_module(str(ckpt))
    assert module.optimizer_factory is None  # dropped, never instantiated
    assert not marker.exists()
    ckpt = _with_config(tiny_module, tmp_path / "extra.ckpt", trainer={"_target_": "x"})
    with pytest.raises(UntrustedCheckpointError, match="unexpected keys \\['trainer'\\]"):
        load_module(str(ckpt))
