from __future__ import annotations

import functools
import math

import pytest
import torch
from hydra.utils import instantiate

from cheeger.losses import (
    CompositeLoss,
    CrossEntropy,
    LovaszSoftmax,
    NoiseFloorPenalty,
    RayleighConsistency,
)
from cheeger.losses.base import SegmentationLoss
from cheeger.losses.composite import warmup_factor
from tests.conftest import CONF, compose


class Constant(SegmentationLoss):
    """A loss term that returns a fixed value (records the arguments it was built with)."""

    def __init__(self, value: float, num_classes: int | None = None) -> None:
        super().__init__()
        self.value = value
        self.num_classes = num_classes

    def forward(self, logits, target, aux=None):
        return logits.sum() * 0.0 + self.value


def test_warmup_factor():
    # start_step 10, warmup 4: 0 before and at step 10, then 1/4, 2/4, 3/4, 1, 1
    assert [warmup_factor(s, 10, 4) for s in (0, 9, 10, 11, 12, 13, 14, 100)] == [
        0.0,
        0.0,
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
    ]
    assert [warmup_factor(s, 3, 0) for s in (2, 3, 4)] == [0.0, 1.0, 1.0]


def test_weighted_sum_with_warmup_and_term_values():
    loss = CompositeLoss(
        {
            "a": {"loss": Constant(2.0), "weight": 1.0},
            "b": {"loss": Constant(10.0), "weight": 0.5, "start_step": 2, "warmup_steps": 4},
        }
    )
    logits = torch.zeros(1, 2, 2, 2)
    expected = {0: 2.0, 2: 2.0, 3: 2.0 + 0.5 * 10 / 4, 4: 2.0 + 0.5 * 10 / 2, 6: 7.0, 50: 7.0}
    for step, total in expected.items():
        loss.set_step(step)
        assert loss(logits, None).item() == pytest.approx(total)
        value, terms = loss.evaluate(logits, None)
        assert value.item() == pytest.approx(total)
        # the logged values are the terms themselves, unweighted and detached
        assert {k: v.item() for k, v in terms.items()} == {"a": 2.0, "b": 10.0}
        assert not any(v.requires_grad for v in terms.values())
    loss.set_step(3)
    assert loss.weights() == {"a": 1.0, "b": 0.125}


def test_ce_plus_half_lovasz_by_hand():
    # Pixel 0: label 0, logits (2, 0); pixel 1: label 1, logits (0, 1).
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1]]])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    e0, e1 = 1 / (1 + math.exp(2)), 1 / (1 + math.exp(1))  # each pixel's error, both classes
    # class 0: errors (e0, e1), order pixel 1 (background) then pixel 0: Jaccard 1/2, 1
    # class 1: errors (e0, e1), order pixel 1 (foreground) then pixel 0: Jaccard 1, 1
    lovasz = (0.5 * e1 + 0.5 * e0 + e1) / 2
    loss = CompositeLoss(
        {
            "ce": {"loss": functools.partial(CrossEntropy), "weight": 1.0},
            "lovasz": {"loss": functools.partial(LovaszSoftmax), "weight": 0.5},
        },
        num_classes=2,
        ignore_index=255,
    )
    assert loss(logits, target).item() == pytest.approx(ce + 0.5 * lovasz)
    assert loss.evaluate(logits, target).terms["lovasz"].item() == pytest.approx(lovasz)


def test_factories_get_the_arguments_they_take():
    loss = CompositeLoss(
        {
            "const": {"loss": functools.partial(Constant, 1.0)},
            "noise": {"loss": NoiseFloorPenalty},  # takes neither argument
            "ce": {"loss": functools.partial(CrossEntropy, ignore_index=0)},
        },
        num_classes=5,
        ignore_index=7,
    )
    assert loss.members["const"].num_classes == 5
    assert loss.members["ce"].num_classes == 5 and loss.members["ce"].ignore_index == 7
    assert isinstance(loss.members["noise"], NoiseFloorPenalty)


def test_class_weights_from_the_data_reach_members():
    loss = CompositeLoss(
        {
            "ce": {"loss": CrossEntropy(3, class_weights="median_frequency")},
            "lovasz": {"loss": LovaszSoftmax(3), "weight": 0.5},
        }
    )
    assert loss.needs_dataset_weights
    loss.set_class_weights(torch.tensor([0.5, 1.0, 4.0]))
    assert torch.equal(loss.members["ce"].weight, torch.tensor([0.5, 1.0, 4.0]))
    assert not CompositeLoss({"l": {"loss": LovaszSoftmax(3)}}).needs_dataset_weights


def test_step_is_saved_in_the_state_dict():
    def make():
        return CompositeLoss(
            {"ce": {"loss": CrossEntropy(3, class_weights="median_frequency")}},
        )

    loss = make()
    loss.set_step(123)
    loss.set_class_weights(torch.tensor([1.0, 2.0, 3.0]))
    restored = make()
    restored.load_state_dict(loss.state_dict())
    assert restored.step == 123
    assert torch.equal(restored.members["ce"].weight, torch.tensor([1.0, 2.0, 3.0]))


def test_idle_term_cannot_poison_the_total():
    loss = CompositeLoss(
        {
            "a": {"loss": Constant(1.0)},
            "b": {"loss": Constant(math.nan), "start_step": 5},
        }
    )
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    value, terms = loss.evaluate(logits, None)
    assert value.item() == 1.0 and math.isnan(terms["b"].item())


def test_missing_auxiliary_names_term_and_head():
    loss = CompositeLoss({"smooth": {"loss": RayleighConsistency()}})
    with pytest.raises(ValueError, match=r"loss.terms.smooth: .*aux\['graph'\] from head=spectral"):
        loss(torch.zeros(1, 2, 2, 2), None, {})


@pytest.mark.parametrize(
    "terms, message",
    [
        ({}, "at least one term"),
        ({"a": {"weight": 1.0}}, "'loss' required"),
        ({"a": {"loss": Constant(1.0), "weigth": 1.0}}, r"loss.terms.a takes the keys"),
        ({"a": {"loss": Constant(1.0), "weight": -1.0}}, "weight must be a number >= 0"),
        ({"a": {"loss": Constant(1.0), "warmup_steps": 1.5}}, "warmup_steps must be an int"),
        ({"a": {"loss": Constant(1.0), "start_step": -1}}, "start_step must be an int"),
        ({"a": {"loss": 3.0}}, "must build a cheeger.losses.SegmentationLoss"),
        ({"a": {"loss": torch.nn.L1Loss()}}, "must build a cheeger.losses.SegmentationLoss"),
        ({"a.b": {"loss": Constant(1.0)}}, "cannot name a term"),
    ],
)
def test_bad_term_specifications(terms, message):
    with pytest.raises(ValueError, match=message):
        CompositeLoss(terms)


PRESETS = {
    "ce_lovasz": {"ce": (CrossEntropy, 1.0), "lovasz": (LovaszSoftmax, 0.5)},
    "ce_rayleigh": {"ce": (CrossEntropy, 1.0), "rayleigh": (RayleighConsistency, 0.1)},
    "spectral": {
        "ce": (CrossEntropy, 1.0),
        "rayleigh": (RayleighConsistency, 0.1),
        "noise_floor": (NoiseFloorPenalty, 0.05),
    },
}


@pytest.mark.parametrize("option", sorted(PRESETS))
def test_composite_presets_instantiate(option, tmp_path):
    assert (CONF / "loss" / f"{option}.yaml").is_file()
    cfg = compose("train", [f"loss={option}"], tmp_path)
    loss = instantiate(cfg.loss, num_classes=19, ignore_index=255)
    assert isinstance(loss, CompositeLoss)
    expected = PRESETS[option]
    assert set(loss.members) == set(expected)
    for name, (cls, weight) in expected.items():
        assert type(loss.members[name]) is cls and loss.schedules[name].weight == weight
    assert loss.members["ce"].num_classes == 19 and loss.needs_dataset_weights
    if "rayleigh" in expected:
        assert loss.schedules["rayleigh"].warmup_steps > 0
        assert loss.members["rayleigh"].num_classes == 19
