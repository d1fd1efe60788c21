"""Noise-floor penalty: discourage spectral response mass on noise-floor directions."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from cheeger.losses.base import SegmentationLoss
from cheeger.losses.inputs import aux_entry


class NoiseFloorPenalty(SegmentationLoss):
    """Batch mean of ``aux['noise_energy']``.

    ``aux['noise_energy']`` (B,), computed by head=spectral, is the fraction of the
    spectral response's mass lying on noise-floor directions (in [0, 1]). The
    term's strength is its weight in ``CompositeLoss``. Raises ValueError when the
    key is missing or is not a (B,) tensor.

    Shapes:
        forward(logits (B, C, H, W), target (B, H, W), aux) -> scalar
    """

    reads_aux = True  # needs the head's auxiliaries (see SegmentationModule._step)

    term = "noise_floor"

    def forward(self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None) -> Tensor:
        energy = aux_entry(aux, "noise_energy", self.term)
        batch = logits.shape[0]
        if not isinstance(energy, Tensor) or energy.shape != (batch,):
            found = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(
                f"aux['noise_energy'] must have shape (B,) = ({batch},), found {found}"
            )
        return energy.mean()
