"""conf/hparams_search: Optuna searches compose, and a two-trial search runs end to end."""

from __future__ import annotations

import json
import re

from omegaconf import OmegaConf

from cheeger.run.config_schema import validate_config
from tests.conftest import TINY, compose, compose_with_hydra, run_train_cli
from tests.test_train_spectral import small

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def test_optuna_search_maximises_the_returned_metric():
    cfg = compose_with_hydra(["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == OPTUNA_SWEEPER
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/mIoU"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == 1234 and sweeper.n_trials == 20
    assert dict(sweeper.params) == {
        "optimizer.lr": "tag(log, interval(0.0003, 0.03))",
        "optimizer.weight_decay": "tag(log, interval(0.00001, 0.001))",
    }
    assert cfg.hydra.runtime.choices.head == "conv"  # any head; the default one here


def test_spectral_search_selects_the_spectral_head_and_its_keys():
    cfg = compose_with_hydra(["hparams_search=optuna_spectral"])
    assert cfg.hydra.runtime.choices.head == "spectral"
    params = cfg.hydra.sweeper.params
    assert set(params) == {"optimizer.lr", "optimizer.weight_decay", "k", "knn", "response.temper"}
    assert cfg.hydra.sweeper.direction == "maximize"
    # Every searched key exists in the composed config (a trial overrides it, never adds it).
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_every_corner_of_the_spectral_search_space_is_a_valid_config(tmp_path):
    """The bounds of each interval and every choice compose and pass validate_config."""
    params = compose_with_hydra(["hparams_search=optuna_spectral"]).hydra.sweeper.params
    corners: dict[str, list[str]] = {}
    for key, spec in params.items():
        numbers = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", spec)
        assert numbers, f"{key}: no values in {spec!r}"
        corners[key] = numbers
    for index in range(max(len(values) for values in corners.values())):
        point = [f"{key}={values[min(index, len(values) - 1)]}" for key, values in corners.items()]
        cfg = compose("train", ["hparams_search=optuna_spectral", *point], tmp_path / str(index))
        validate_config(cfg)


def test_two_trials_run_and_are_summarised(tmp_path):
    sweep = tmp_path / "optuna"
    done = run_train_cli(
        "-m",
        "hparams_search=optuna_spectral",
        "hydra.sweeper.n_trials=2",
        *TINY,
        *small(),
        "debug=fast_dev_run",
        "callbacks.panel=null",
        "callbacks.summary_plots=null",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The sweeper logged the best trial's value, which is what train() returned.
    best = (sweep / "optimization_results.yaml").read_text()
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.name == "optuna" and set(results.best_params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "response.temper",
    }, best  # k and knn were fixed on the command line (small())
    summary = (sweep / "summary.md").read_text()
    assert "| 0 | completed |" in summary and "| 1 | completed |" in summary
    job_values = [
        json.loads((sweep / str(n) / "final_metrics.json").read_text())["val/mIoU"] for n in (0, 1)
    ]
    assert results.best_value == max(job_values)
