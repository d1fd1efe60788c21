"""Typed config checks: wrong types and ranges fail at start, naming key, value, expectation."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from cheeger.run.config_schema import SCHEMA, Field, validate_config
from cheeger.train import train


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=0", "optimizer.lr=0 (int): expected a finite number > 0"),
        ("seed=-3", "seed=-3 (int): expected an int >= 0 or null"),
        ("seed=1.5", "seed=1.5 (float): expected an int >= 0 or null"),
    ],
)
def test_bad_values_fail_before_training(override, message, compose_train):
    cfg = compose_train("head=spectral", override)
    with pytest.raises(ValueError, match="invalid config value") as info:
        train(cfg)
    assert message in str(info.value)


def test_every_problem_is_listed_at_once(compose_train):
    cfg = compose_train("trainer.log_every_n_steps=0", "test=maybe", "optimizer.weight_decay=-1")
    with pytest.raises(ValueError) as info:
        validate_config(cfg)
    text = str(info.value)
    assert "trainer.log_every_n_steps=0 (int): expected an int >= 1" in text
    assert "optimizer.weight_decay=-1 (int): expected a finite number >= 0" in text
    assert "test='maybe' (str): expected true or false" in text


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.batch_size=0", "dataset.batch_size must be an int >= 1; found 0"),
        ("dataset.eval_batch_size=abc", "dataset.eval_batch_size must be an int >= 1"),
        ("dataset.num_workers=-1", "dataset.num_workers must be an int >= 0; found -1"),
        ("dataset.skip_bad=1", "dataset.skip_bad must be true or false; found 1"),
        ("dataset.allow_absent_classes=yes", "dataset.allow_absent_classes must be true or"),
    ],
)
def test_data_options_fail_when_the_datamodule_is_built(override, message, compose_train):
    from hydra.utils import instantiate

    cfg = compose_train(override)
    validate_config(cfg)  # the datamodule owns these
    with pytest.raises((ValueError, InstantiationException)) as info:
        instantiate(cfg.dataset).dataset("train")
    assert message in str(info.value)


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
    assert set(SCHEMA) >= {"optimizer.lr", "trainer.log_every_n_steps"}


# Options a constructor owns are checked there only, when the module is built (before
# any data is read or step taken), and never again by the schema.
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["head=spectral", "k=abc"], "k (solver.k) must be an int >= 1; found 'abc'"),
        (["head=spectral", "k=2.5"], "k (solver.k) must be an int >= 1; found 2.5"),
        (["head=spectral", "k=0"], "k (solver.k) must be an int >= 1; found 0"),
        (
            ["head=spectral", "affinity=gaussian", "knn=-1"],
            "knn (affinity.knn) must be an int >= 1; found -1",
        ),
        (["head.dropout=1.0"], "head.dropout must be a number in [0, 1), found 1.0"),
        (["head=spectral", "head.dropout=-0.1"], "head.dropout must be a number in [0, 1)"),
        (["head.dropout=abc"], "head.dropout must be a number in [0, 1), found 'abc'"),
        (["head=spectral", "response.temper=-1"], "response.temper must be a finite number >= 0"),
        (["head=spectral", "head.embed_dim=0"], "head.embed_dim must be an int >= 1"),
        (["head=spectral", "affinity.radius=0"], "affinity.radius must be an int >= 1"),
        (["head=spectral", "affinity.sigma=0"], "affinity.sigma must be a finite number > 0"),
        (["head=spectral", "solver=chebyshev", "solver.order=0"], "solver.order must be an int"),
        (["model.depth=0"], "model.depth must be an int >= 1; found 0"),
        (["model.base_channels=abc"], "model.base_channels must be an int >= 1; found 'abc'"),
        (["model.output_stride=3"], "model.output_stride must be one of"),
        (["metrics.dilation_ratio=0"], "dilation_ratio (metrics.dilation_ratio) must be a finite"),
        (["metrics.bf_tolerance=-1"], "tolerance (metrics.bf_tolerance) must be a finite number"),
    ],
)
def test_constructor_owned_options_fail_when_the_module_is_built(overrides, message, compose_train):
    from cheeger.module import SegmentationModule

    cfg = compose_train(*overrides)
    validate_config(cfg)  # not the schema's business
    # Hydra wraps what a _target_ raises (InstantiationException) and adds the full key.
    with pytest.raises((ValueError, InstantiationException)) as info:
        SegmentationModule.from_config(cfg)
    assert message in str(info.value)
    assert not {"k", "knn", "head.dropout", "model.depth", "response.temper"} & set(SCHEMA)


POSITIVE_FLOAT = Field(float, 0, low_open=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=inf", "optimizer.lr=inf (float): expected a finite number > 0"),
        ("optimizer.lr=nan", "optimizer.lr=nan (float): expected a finite number > 0"),
        # Keys outside the schema: every float of the config is checked.
        ("+optimizer.betas=[0.9,nan]", "optimizer.betas[1]=nan: expected a finite number"),
        ("metrics.dilation_ratio=-inf", "metrics.dilation_ratio=-inf: expected a finite number"),
        ("+loss.smooth=inf", "loss.smooth=inf: expected a finite number"),
    ],
)
def test_non_finite_floats_fail_at_start(override, message, compose_train):
    with pytest.raises(ValueError, match="invalid config value") as info:
        validate_config(compose_train(override))
    assert message in str(info.value)
    assert str(info.value).count(override.lstrip("+").split("=")[0].split("[")[0]) == 1
