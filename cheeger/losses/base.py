"""The contract between a loss and ``SegmentationModule``.

Every cheeger loss is a ``SegmentationLoss``: ``forward(logits, target, aux) -> scalar``
plus what it declares to the module, so that the module asks instead of probing:

* ``evaluate(logits, target, aux) -> LossValue``: the total and, from the same call, the
  unweighted value of each named term for the logs (no terms for a single-term loss);

* ``reads_aux``: the loss needs the head's auxiliaries (the graph, eigenpairs, ...); on
  stitched sliding windows there are none, and such a loss is not evaluated;
* ``needs_dataset_weights``: class weights must be counted from the training split and
  handed over with ``set_class_weights`` before the first step;
* ``set_step``: the optimizer step the next call belongs to (warm-up schedules).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn


class LossValue(NamedTuple):
    """What one loss call returns to the module.

    Attributes:
        total: the scalar to back-propagate.
        terms: term name -> its unweighted value (detached scalars), logged as
            ``{stage}/loss/{name}``; empty for a single-term loss.
    """

    total: Tensor
    terms: dict[str, Tensor]


class SegmentationLoss(nn.Module):
    """Base class of the losses (see the module docstring for the contract).

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux mapping or None) -> scalar
    """

    reads_aux: bool = False
    needs_dataset_weights: bool = False

    def set_class_weights(self, weights: Tensor) -> None:
        """Install class weights (C,) counted from the data; only for losses that declare
        ``needs_dataset_weights``."""
        raise TypeError(
            f"{type(self).__name__} takes no dataset class weights "
            "(its needs_dataset_weights is False)"
        )

    def set_step(self, step: int) -> None:
        """The optimizer step the next ``forward`` belongs to; losses without a schedule
        ignore it."""

    def forward(self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def evaluate(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None
    ) -> LossValue:
        """The total and its terms from one call; a single-term loss has no terms."""
        return LossValue(self(logits, target, aux), {})
