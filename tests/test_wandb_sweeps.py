"""sweeps/*.yaml: W&B sweep files whose every point is a valid cheeger.train command line."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from cheeger.run.config_schema import validate_config
from cheeger.run.keys import WANDB_MAX_SUMMARY
from tests.conftest import ROOT, compose

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
# Top-level keys of a W&B sweep configuration that these files may use.
SWEEP_KEYS = {"name", "description", "program", "method", "metric", "parameters", "command"}
SWEEP_KEYS |= {"run_cap", "early_terminate"}
# Points drawn from each random/bayes sweep.
SAMPLES = 4


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def sample(spec: dict[str, Any], rng: random.Random) -> Any:
    """One draw from a W&B parameter spec (the distributions these files use)."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    kind, low, high = spec["distribution"], spec["min"], spec["max"]
    if kind == "uniform":
        return rng.uniform(low, high)
    if kind == "int_uniform":
        return rng.randint(low, high)
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    raise AssertionError(f"distribution {kind!r} has no sampler in this test; add one")


def points(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Points of a sweep to compose (each costs a Hydra compose, ~0.2 s).

    Grid: every combination of the parameters that choose a config group (those interact
    at composition: a key exists or not depending on them), and every value of the
    others at least once, cycled alongside. Random/bayes: SAMPLES seeded draws.
    """
    params = sweep["parameters"]
    if sweep["method"] != "grid":
        rng = random.Random(0)
        return [{name: sample(spec, rng) for name, spec in params.items()} for _ in range(SAMPLES)]
    axes = {
        n: spec["values"] if "values" in spec else [spec["value"]] for n, spec in params.items()
    }
    groups = [n for n in axes if (ROOT / "conf" / n).is_dir()]
    combos = list(itertools.product(*(axes[n] for n in groups)))
    others = {n: values for n, values in axes.items() if n not in groups}
    count = max([len(combos), *(len(values) for values in others.values())])
    return [
        {
            **dict(zip(groups, combos[i % len(combos)], strict=True)),
            **{n: values[i % len(values)] for n, values in others.items()},
        }
        for i in range(count)
    ]


def agent_command(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """The argv ``wandb agent`` runs for ``point``: its macros filled in as the agent does."""
    macros = {
        "env": ["/usr/bin/env"],
        "interpreter": ["python"],
        "program": [sweep["program"]],
        **create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}}),
    }
    argv: list[str] = []
    for chunk in map(str, sweep["command"]):
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += macros[chunk[2:-1]]
        else:
            argv.append(chunk)
    return argv


def overrides_of(argv: list[str]) -> list[str]:
    """The Hydra overrides of a ``python -m cheeger.train ...`` argv."""
    start = argv.index("cheeger.train") + 1
    return argv[start:]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_a_wandb_sweep_of_cheeger_train(path):
    sweep = load(path)
    assert set(sweep) <= SWEEP_KEYS, f"{path.name}: unknown keys {set(sweep) - SWEEP_KEYS}"
    assert sweep["name"] == path.stem
    assert sweep["method"] in ("grid", "random", "bayes")
    # The metric the sweep ranks by is a key train logs with a max summary in W&B.
    assert sweep["metric"] == {"name": sweep["metric"]["name"], "goal": "maximize"}
    assert sweep["metric"]["name"] in WANDB_MAX_SUMMARY
    assert (ROOT / sweep["program"]).is_file()
    command = sweep["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "cheeger.train"]
    assert "logger=wandb" in command and command[-1] == "${args_no_hyphens}"
    for name, spec in sweep["parameters"].items():
        forms = {"value", "values", "distribution"} & set(spec)
        assert len(forms) == 1, (
            f"{path.name}: parameter {name} needs one of value/values/distribution"
        )
        if sweep["method"] == "grid":
            assert "distribution" not in spec, f"{path.name}: grid parameter {name} is continuous"
        # wandb writes None as the string "None", which Hydra reads as a string: use "null".
        values = spec.get("values", [spec.get("value", 0)])
        assert None not in values, f"{path.name}: parameter {name} has a None value"


def test_agent_command_is_the_documented_one():
    sweep = {"program": "cheeger/train.py", "command": load(SWEEPS[0])["command"]}
    argv = agent_command(sweep, {"k": 8, "response.temper": 1.0, "solver.out_of_subspace": False})
    assert argv == [
        "/usr/bin/env",
        "python",
        "-m",
        "cheeger.train",
        "logger=wandb",
        "k=8",
        "response.temper=1.0",
        "solver.out_of_subspace=False",
    ]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_point_composes_into_a_valid_config(path, tmp_path):
    sweep = load(path)
    grid = points(sweep)
    assert grid, f"{path.name} has no points"
    for index, point in enumerate(grid):
        overrides = overrides_of(agent_command(sweep, point))
        cfg = compose("train", overrides, tmp_path / str(index))
        validate_config(cfg)
        assert "wandb" in cfg.logger, overrides
        for name, value in point.items():
            # A group choice is checked by composing; any other key must reach the config as is.
            if not (ROOT / "conf" / name).is_dir():
                assert OmegaConf.select(cfg, name) == value, f"{name}={value}: {overrides}"


def test_points_cover_every_value_and_every_group_combination():
    sweep = {
        "method": "grid",
        "parameters": {
            "solver": {"values": ["dense", "lanczos"]},
            "response": {"values": ["heat", "temper"]},
            "k": {"values": [8, 16, 32]},
            "head": {"value": "spectral"},
        },
    }
    chosen = points(sweep)
    assert len(chosen) == 4  # 2 x 2 group choices; the 3 values of k cycle alongside
    assert {(p["solver"], p["response"]) for p in chosen} == {
        ("dense", "heat"),
        ("dense", "temper"),
        ("lanczos", "heat"),
        ("lanczos", "temper"),
    }
    assert [p["k"] for p in chosen] == [8, 16, 32, 8]
    assert all(p["head"] == "spectral" for p in chosen)
