"""Checkpoints that are never half-written, and a ``last.ckpt`` that is really the last.

Lightning's default IO writes straight to the target path, so a process killed
while saving (pre-emption, OOM killer) can leave a truncated ``last.ckpt`` that
breaks the resume it was meant for. ``AtomicCheckpointIO`` writes to a temporary
file in the same directory, flushes it to disk and renames it over the target:
a reader sees either the old checkpoint or the new one, never a mix. Every read
(resume, test, eval, predict) goes through ``read_checkpoint``: data only
(``weights_only=True``), with a pickle payload refused as untrusted and an empty or
truncated file reported as a corrupt checkpoint.

``LastCheckpoint`` writes ``last.ckpt``: every N optimizer steps, at the end of
every training epoch, and when a SIGTERM stops the run. Lightning 2.6's
``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also
saves a top-k checkpoint, so with ``save_top_k=1`` it held the best epoch, not
the latest one, and a resume silently went back to it. Its state, stored in
every checkpoint, also carries the global random states, so that stochastic
layers (dropout) continue the same random stream after a resume.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger("cheeger")

LAST_NAME = "last.ckpt"


class UntrustedCheckpointError(ValueError):
    """A checkpoint that would run code when unpickled (it names a Python global)."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is empty, truncated or not a torch checkpoint at all."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint as data only (``weights_only=True``), on the CPU.

    cheeger's checkpoints hold tensors and plain containers, nothing else, so any
    pickled reference to a Python callable is refused, never called.

    Raises:
        UntrustedCheckpointError: the file references a global (a pickle payload).
        CorruptCheckpointError: an empty, truncated or random file, or one whose top
            level is not a dict.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch words it "Unsupported global: GLOBAL io.open was not an allowed global"
        # or "unsupported GLOBAL posix.system whose module posix is blocked".
        found = re.search(r"unsupported global:? GLOBAL ([\w.]+)", str(error), re.IGNORECASE)
        if found:
            raise UntrustedCheckpointError(
                f"untrusted checkpoint content in {os.fspath(path)!r}: it references the "
                f"Python global {found.group(1)}, which loading would call. cheeger "
                "checkpoints hold only tensors and plain data; nothing was executed."
            ) from None
        raise CorruptCheckpointError(_corrupt(path, error)) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as error:
        raise CorruptCheckpointError(_corrupt(path, error)) from None
    if not isinstance(checkpoint, dict):
        raise CorruptCheckpointError(
            f"corrupt checkpoint {os.fspath(path)!r}: expected a dict at the top level, "
            f"found {type(checkpoint).__name__}"
        )
    return checkpoint


def check_stored_targets(config: Any, path: str | os.PathLike, where: str) -> None:
    """UntrustedCheckpointError unless every ``_target_`` in ``config`` is cheeger's own.

    A stored config is rebuilt with ``hydra.utils.instantiate``, which calls whatever a
    ``_target_`` names; a checkpoint's config could name ``pathlib.Path.write_text``.
    Every target must resolve to a class or function defined in a ``cheeger`` module
    (``cheeger.models.solvers.torch.load`` resolves to torch's, and is refused).
    """
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_":
                _check_target(value, path, f"{where}._target_")
            else:
                check_stored_targets(value, path, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_stored_targets(value, path, f"{where}[{i}]")


def _check_target(target: Any, path: str | os.PathLike, where: str) -> None:
    refused = UntrustedCheckpointError(
        f"untrusted checkpoint content in {os.fspath(path)!r}: {where} = {target!r} is not "
        "a class or function of cheeger; nothing was instantiated"
    )
    if not isinstance(target, str) or not (target == "cheeger" or target.startswith("cheeger.")):
        raise refused
    parts = target.split(".")
    obj: Any = None
    for split in range(len(parts), 0, -1):  # the longest importable cheeger module
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name, None)
        break
    defined_in = getattr(obj, "__module__", None) or ""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not (
        defined_in == "cheeger" or defined_in.startswith("cheeger.")
    ):
        raise refused


def _corrupt(path: str | os.PathLike, error: BaseException) -> str:
    size = os.path.getsize(path)
    # torch's messages wrap the cause in advice about weights_only; keep the cause.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0] if lines else type(error).__name__
    for i, line in enumerate(lines):
        if "Unpickler error:" in line:
            after = line.split("error:", 1)[1].strip()
            reason = after or (lines[i + 1] if i + 1 < len(lines) else reason)
            break
    if size == 0:
        reason = "empty file"
    reason = reason.rstrip(".")
    return (
        f"corrupt checkpoint {os.fspath(path)!r} ({size} bytes): {reason}. The file was "
        "cut short or is not a torch checkpoint; use another checkpoint of the run "
        "(last.ckpt or the best epoch)."
    )


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


class NonFiniteCheckpointError(ValueError):
    """A model state with NaN/Inf weights or buffers, which cheeger never writes."""


def non_finite_entries(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding a NaN or Inf."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose ``save_checkpoint`` is atomic (see module doc) and refuses
    a non-finite model state: a resume or an evaluation from it would be garbage, and
    the file it would replace (``last.ckpt``, the best epoch) is worth more."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"AtomicCheckpointIO does not take storage_options, found {storage_options!r}"
            )
        bad = non_finite_entries(checkpoint.get("state_dict", {}))
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise NonFiniteCheckpointError(
                f"refusing to write {path}: the model state has non-finite values in "
                f"{', '.join(bad[:3])}{more}; the file already there (if any) is kept"
            )
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume and test read checkpoints as data only too (:func:`read_checkpoint`)."""
        return read_checkpoint(path)


def rng_states() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, python), in types that
    ``torch.load(weights_only=True)`` reads back."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured (CUDA only when present on both sides)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class LastCheckpoint(Checkpoint):
    """Keep ``dirpath/last.ckpt`` at the latest resumable state of the run.

    Written (atomically, through the trainer's checkpoint IO) after every
    ``every_n_train_steps``-th optimizer step (0: never within an epoch), at the end
    of every training epoch (after its validation), and when the run is stopped by
    SIGTERM: Lightning then finishes the current batch and raises, and this callback
    saves that state before the process exits. A SIGTERM during validation keeps the
    previous ``last.ckpt``, because the metrics of a half-run validation cannot be
    restored. Nothing is written in ``fast_dev_run`` or the sanity check.

    ``ckpt_path=last`` (with the run directory of the interrupted run) and
    ``ckpt_path=<run directory>`` both resume from this file.
    """

    save_weights_only = False  # resume needs the whole training state

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int = 0) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int):
            raise TypeError(
                "callbacks.last_checkpoint.every_n_train_steps must be an int, found "
                f"{every_n_train_steps!r}"
            )
        if every_n_train_steps < 0:
            raise ValueError(
                "callbacks.last_checkpoint.every_n_train_steps must be >= 0 (0: only at epoch "
                f"ends), found {every_n_train_steps}"
            )
        self.path = Path(dirpath) / LAST_NAME
        self.every_n_train_steps = every_n_train_steps
        # (global step, batches processed in total) of the last save: one save per state.
        self._saved_at: tuple[int, int] | None = None

    def _position(self, trainer: L.Trainer) -> tuple[int, int]:
        return trainer.global_step, trainer.fit_loop.epoch_loop.batch_progress.total.processed

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now, unless this state was already written."""
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        position = self._position(trainer)
        if position == self._saved_at:
            return
        # A save, not a load: last.ckpt keeps the whole training state (optimizer, loops,
        # RNG) for resume. Passing the flag, as ModelCheckpoint does, also keeps Lightning
        # from logging that it was unset at every save. Loads are always data-only.
        trainer.save_checkpoint(self.path, self.save_weights_only)
        self._saved_at = position

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        every = self.every_n_train_steps
        if every and trainer.global_step % every == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The training loop raises at batch boundaries once SIGTERM has arrived (also when
        # the signal killed the data workers first); the state there is consistent.
        if not trainer.received_sigterm or not trainer.training:
            return
        self.save(trainer)
        # Saved now or at this very state before: the file holds the current state.
        log.warning("SIGTERM: %s holds global step %d", self.path, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"rng_states": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng_states" in state_dict:
            set_rng_states(state_dict["rng_states"])
