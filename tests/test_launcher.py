"""conf/hydra/launcher/slurm.yaml: the SLURM launcher composes with its cluster settings."""

from __future__ import annotations

from tests.conftest import compose_with_hydra

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_plain_submitit_slurm_composes():
    launcher = compose_with_hydra(["hydra/launcher=submitit_slurm"]).hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    assert launcher.partition is None and launcher.tasks_per_node == 1


def test_cluster_config_sets_the_slurm_request():
    cfg = compose_with_hydra(["hydra/launcher=slurm"])
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    expected = {
        "partition": "gpu",
        "account": None,
        "timeout_min": 720,
        "nodes": 1,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "mem_gb": 64,
        "additional_parameters": {},
        "setup": [],
    }
    assert {key: launcher[key] for key in expected} == expected
    # Job files land next to the sweep's job directories.
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"


def test_ddp_request_follows_the_command_line():
    cfg = compose_with_hydra(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "hydra.launcher.tasks_per_node=4",
            "hydra.launcher.gpus_per_node=4",
            "+hydra.launcher.additional_parameters.mail-type=FAIL",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4
    assert launcher.additional_parameters == {"mail-type": "FAIL"}
