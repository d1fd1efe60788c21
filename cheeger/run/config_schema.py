"""Typed checks of a composed run config, before anything is built.

Hydra parses command-line values leniently (``dataset.batch_size=abc`` becomes the
string "abc", ``seed=-1`` the integer -1) and the error would otherwise surface deep
inside Lightning or a data loader, or never. :func:`validate_config` checks the keys that
no cheeger constructor owns (run, trainer and data-loading options) against a declared
type and range and raises one ``ValueError`` that names every bad key, its value and
what was expected. An option a constructor owns (``k`` is ``solver.k``, ``knn`` is
``affinity.knn``, ``head.dropout``) is checked there, once, when the module is built
before any data is read. Keys absent from the config (a group not selected) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class Field:
    """A config key's expected type (``int``, ``float``, ``bool``, ``str``), bounds, nullability."""

    kind: type
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    low_open: bool = False  # low itself excluded (e.g. learning rate > 0)

    def describe(self) -> str:
        kinds = {int: "an int", float: "a finite number", bool: "true or false", str: "a string"}
        text = kinds[self.kind]
        if self.low is not None:
            text += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            text += f" <= {self.high:g}"
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: object) -> bool:
        if value is None:
            return self.nullable
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind is float and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            return False
        if self.kind in (int, str) and not isinstance(value, self.kind):
            return False
        if self.kind in (int, float):
            if self.low is not None and (value <= self.low if self.low_open else value < self.low):
                return False
            if self.high is not None and value > self.high:
                return False
        return True


POSITIVE_INT = Field(int, 1)
POSITIVE = Field(float, 0, low_open=True)

SCHEMA: dict[str, Field] = {
    "seed": Field(int, 0, nullable=True),
    "test": Field(bool),
    "ckpt_path": Field(str, nullable=True),
    "trainer.max_epochs": Field(int, -1, nullable=True),
    "trainer.max_steps": Field(int, -1, nullable=True),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "dataset.num_classes": POSITIVE_INT,
    "dataset.stats_cache": Field(str, nullable=True),
    "dataset.source.allow_lossy_masks": Field(bool),
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": Field(float, 0),
    # cheeger.predict
    "alpha": Field(float, 0, 1),
    "overwrite": Field(bool),
}


def validate_config(cfg: DictConfig, schema: dict[str, Field] = SCHEMA) -> None:
    """Raise ``ValueError`` listing every key of ``schema`` whose value breaks its ``Field``."""
    problems = []
    for key, field in schema.items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING or OmegaConf.is_config(value):
            continue
        if not field.accepts(value):
            problems.append(
                f"{key}={value!r} ({type(value).__name__}): expected {field.describe()}"
            )
    listed = {p.split("=", 1)[0] for p in problems}
    for key, value in _float_leaves(cfg):
        if not math.isfinite(value) and key not in listed:
            problems.append(f"{key}={value!r}: expected a finite number (no NaN or Inf)")
    if problems:
        raise ValueError("invalid config value(s):\n  " + "\n  ".join(problems))


def _float_leaves(node: object, prefix: str = ""):
    """(dotted key, value) of every float in a config tree, the ``hydra`` node left out.

    No cheeger setting means anything when NaN or infinite, so every float is checked,
    not only the keys of the schema.
    """
    if isinstance(node, DictConfig):
        for key in node.keys():
            if prefix == "" and key == "hydra":
                continue
            try:
                value = OmegaConf.select(node, str(key), throw_on_missing=False)
            except Exception:  # an interpolation that cannot resolve here: not a float
                continue
            yield from _float_leaves(value, f"{prefix}{key}.")
    elif OmegaConf.is_list(node):
        for i, value in enumerate(node):
            yield from _float_leaves(value, f"{prefix[:-1]}[{i}].")
    elif isinstance(node, float):
        yield prefix[:-1], node


_MISSING = object()
