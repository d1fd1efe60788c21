"""Typed config checks: wrong types and ranges fail at start, naming key, value, expectation."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cheeger.run.config_schema import SCHEMA, Field, validate_config
from cheeger.train import train


@pytest.mark.parametrize(
    "override, message",
    [
        ("k=abc", "k='abc' (str): expected an int >= 1"),
        ("knn=-1", "knn=-1 (int): expected an int >= 1"),
        ("k=2.5", "k=2.5 (float): expected an int >= 1"),
        ("optimizer.lr=0", "optimizer.lr=0 (int): expected a finite number > 0"),
        ("response.temper=-1", "response.temper=-1 (int): expected a finite number >= 0"),
        ("solver.tol=abc", "solver.tol='abc' (str): expected a finite number > 0 or null"),
    ],
)
def test_bad_values_fail_before_training(override, message, compose_train):
    cfg = compose_train("head=spectral", override)
    with pytest.raises(ValueError, match="invalid config value") as info:
        train(cfg)
    assert message in str(info.value)


def test_every_problem_is_listed_at_once(compose_train):
    cfg = compose_train("dataset.batch_size=0", "test=maybe", "dataset.skip_bad=1")
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    text = str(info.value)
    assert "dataset.batch_size=0 (int): expected an int >= 1" in text
    assert "dataset.skip_bad=1 (int): expected true or false" in text
    assert "test='maybe' (str): expected true or false" in text


@pytest.mark.parametrize("head", ["conv", "spectral"])
def test_default_configs_are_valid(head, compose_train):
    validate_config(compose_train(f"head={head}", tiny=False))


def test_keys_of_unselected_groups_are_skipped():
    validate_config(OmegaConf.create({"seed": 0}))  # no k, no head: nothing to check


def test_field_rules():
    assert Field(float, 0, low_open=True).accepts(1e-9) and not POSITIVE_FLOAT.accepts(0.0)
    assert not Field(int, 1).accepts(True)  # a bool is not an int here
    assert Field(int, 0, nullable=True).accepts(None) and not Field(int, 0).accepts(None)
    assert Field(float, 0, 1).describe() == "a finite number >= 0 <= 1"
    assert set(SCHEMA) >= {"k", "knn", "optimizer.lr", "dataset.batch_size"}


POSITIVE_FLOAT = Field(float, 0, low_open=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=inf", "optimizer.lr=inf (float): expected a finite number > 0"),
        ("optimizer.lr=nan", "optimizer.lr=nan (float): expected a finite number > 0"),
        # Keys outside the schema: every float of the config is checked.
        ("+optimizer.betas=[0.9,nan]", "optimizer.betas[1]=nan: expected a finite number"),
        ("metrics.dilation_ratio=-inf", "metrics.dilation_ratio=-inf (float)"),
        ("+loss.smooth=inf", "loss.smooth=inf: expected a finite number"),
    ],
)
def test_non_finite_floats_fail_at_start(override, message, compose_train):
    with pytest.raises(ValueError, match="invalid config value") as info:
        validate_config(compose_train(override))
    assert message in str(info.value)
    assert str(info.value).count(override.lstrip("+").split("=")[0].split("[")[0]) == 1
