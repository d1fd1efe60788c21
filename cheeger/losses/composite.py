"""A weighted sum of loss terms with per-term warm-up and per-term values for logging.

Configured as a mapping from term name to its loss and schedule::

    _target_: cheeger.losses.CompositeLoss
    terms:
      ce:
        loss: {_target_: cheeger.losses.CrossEntropy, _partial_: true}
        weight: 1.0
      rayleigh:
        loss: {_target_: cheeger.losses.RayleighConsistency, _partial_: true}
        weight: 0.1
        start_step: 0        # optional, default 0
        warmup_steps: 500    # optional, default 0 (full weight from start_step)

A term's loss may be a module or a factory (a Hydra partial); factories are
called with the ``num_classes`` and ``ignore_index`` the composite receives,
each only if the factory takes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from cheeger.data.classes import IGNORE_INDEX
from cheeger.losses.base import LossValue, SegmentationLoss

TERM_KEYS = ("loss", "weight", "warmup_steps", "start_step")


def warmup_factor(step: int, start_step: int = 0, warmup_steps: int = 0) -> float:
    """Linear ramp in [0, 1]: 0 before ``start_step``, (step - start_step) / warmup_steps
    during the warm-up, 1 from ``start_step + warmup_steps`` on (from ``start_step`` on
    when ``warmup_steps`` is 0)."""
    if step < start_step:
        return 0.0
    if warmup_steps == 0:
        return 1.0
    return min(1.0, (step - start_step) / warmup_steps)


@dataclass(frozen=True)
class TermSchedule:
    """Weight of one term at optimizer step t: ``weight * warmup_factor(t, ...)``."""

    weight: float = 1.0
    warmup_steps: int = 0
    start_step: int = 0

    def at(self, step: int) -> float:
        return self.weight * warmup_factor(step, self.start_step, self.warmup_steps)


def _check_count(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"loss.terms.{name}.{key} must be an int >= 0, found {value!r}")
    return value


def _schedule(name: str, spec: Mapping[str, Any]) -> TermSchedule:
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
        raise ValueError(f"loss.terms.{name}.weight must be a number >= 0, found {weight!r}")
    return TermSchedule(
        float(weight),
        _check_count(name, "warmup_steps", spec.get("warmup_steps", 0)),
        _check_count(name, "start_step", spec.get("start_step", 0)),
    )


def _build(name: str, loss: Any, options: dict[str, Any]) -> SegmentationLoss:
    """The term's module: ``loss`` itself, or ``loss(**accepted options)`` for a factory."""
    if not isinstance(loss, nn.Module) and callable(loss):
        parameters = inspect.signature(loss).parameters
        loss = loss(**{key: value for key, value in options.items() if key in parameters})
    if not isinstance(loss, SegmentationLoss):
        raise ValueError(
            f"loss.terms.{name}.loss must build a cheeger.losses.SegmentationLoss (a config "
            f"with _target_, optionally _partial_: true), found {type(loss).__name__}"
        )
    return loss


class CompositeLoss(SegmentationLoss):
    """total(t) = sum_i w_i(t) * term_i, with w_i(t) from each term's ``TermSchedule``.

    Args:
        terms: name -> {loss, weight (default 1), warmup_steps (default 0),
            start_step (default 0)}; ``loss`` is a SegmentationLoss or a factory of one
            (a Hydra ``_partial_``). Names are used in logs (``{stage}/loss/{name}``).
        num_classes, ignore_index: passed to the factories that take them.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux=None) -> scalar

    Every term is evaluated at every step, also while its weight is 0 (before
    ``start_step``), so its value is logged and a missing auxiliary fails at once.
    ``evaluate`` returns the total with each term's unweighted value (detached);
    ``forward`` returns the total alone. The step comes from ``set_step``
    (SegmentationModule calls it before each training step) and is saved in the
    state dict, so a resumed or evaluated model weighs its terms as training last
    did. Class weights from the data (``class_weights: median_frequency``) reach
    every member that asks for them.
    """

    def __init__(
        self,
        terms: Mapping[str, Mapping[str, Any]],
        num_classes: int | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("loss.terms must name at least one term, found none")
        options = {"ignore_index": ignore_index}
        if num_classes is not None:
            options["num_classes"] = num_classes
        self.members = nn.ModuleDict()
        self.schedules: dict[str, TermSchedule] = {}
        for name, spec in terms.items():
            name = str(name)
            unknown = sorted(set(spec) - set(TERM_KEYS))
            if unknown or "loss" not in spec:
                raise ValueError(
                    f"loss.terms.{name} takes the keys {TERM_KEYS} with 'loss' required, "
                    f"found {sorted(spec)}"
                )
            try:
                self.members[name] = _build(name, spec["loss"], options)
            except KeyError as error:  # a name ModuleDict rejects, e.g. 'train' or 'a.b'
                raise ValueError(f"loss.terms: {name!r} cannot name a term ({error})") from None
            self.schedules[name] = _schedule(name, spec)
        self.step = 0

    # ---------------------------------------------------------------- step
    @property
    def reads_aux(self) -> bool:
        """Whether any term needs the head's auxiliaries."""
        return any(member.reads_aux for member in self.members.values())

    def set_step(self, step: int) -> None:
        """The optimizer step the next ``forward`` belongs to (drives the warm-ups)."""
        self.step = int(step)

    def weights(self) -> dict[str, float]:
        """Each term's weight at the current step."""
        return {name: schedule.at(self.step) for name, schedule in self.schedules.items()}

    def get_extra_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])

    # -------------------------------------------------------- class weights
    @property
    def needs_dataset_weights(self) -> bool:
        return any(member.needs_dataset_weights for member in self.members.values())

    def set_class_weights(self, weights: Tensor) -> None:
        """Hand dataset-derived class weights (C,) to every member that needs them."""
        for member in self.members.values():
            if member.needs_dataset_weights:
                member.set_class_weights(weights)

    # -------------------------------------------------------------- forward
    def forward(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> Tensor:
        return self.evaluate(logits, target, aux).total

    def evaluate(self, logits: Tensor, target: Tensor, aux: dict | None = None) -> LossValue:
        total = logits.sum() * 0.0
        values: dict[str, Tensor] = {}
        for name, weight in self.weights().items():
            try:
                value = self.members[name](logits, target, aux)
            except ValueError as error:
                raise ValueError(f"loss.terms.{name}: {error}") from error
            values[name] = value.detach()
            # Skipped rather than multiplied by 0, so a non-finite idle term cannot leak.
            if weight > 0:
                total = total + weight * value
        return LossValue(total, values)
