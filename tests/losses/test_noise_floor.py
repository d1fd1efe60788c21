from __future__ import annotations

import pytest
import torch

from cheeger.losses import NoiseFloorPenalty


def test_batch_mean_of_noise_energy():
    energy = torch.tensor([0.1, 0.4, 0.7], requires_grad=True)
    value = NoiseFloorPenalty()(torch.zeros(3, 2, 4, 4), None, {"noise_energy": energy})
    assert value.item() == pytest.approx(0.4)
    value.backward()
    assert torch.allclose(energy.grad, torch.full((3,), 1 / 3))


def test_missing_or_misshaped_noise_energy():
    with pytest.raises(ValueError, match=r"'noise_floor' needs aux\['noise_energy'\]"):
        NoiseFloorPenalty()(torch.zeros(2, 2, 4, 4), None, {})
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\), found \(2, 1\)"):
        NoiseFloorPenalty()(torch.zeros(2, 2, 4, 4), None, {"noise_energy": torch.zeros(2, 1)})
