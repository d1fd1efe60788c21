"""The names under which a run logs its metrics, media and config: one place.

The LightningModule, the callbacks and ``cheeger.train`` log under these names; the W&B
dashboard (``cheeger.dashboard``) and the offline comparison (``cheeger.compare``) read
them back. A panel that names a key no run logs would stay empty without an error, so
both sides take their names from here (tests/test_dashboard.py checks the panels against
the history of real runs).

Metrics are ``<stage>/<name>`` with stage train | val | test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STAGES = ("train", "val", "test")

# Scalar metrics of every stage (train logs no boundary scores).
MIOU = "mIoU"
BOUNDARY_IOU = "boundary_iou"
BF = "bf"
PIXEL_ACC = "pixel_acc"
LOSS = "loss"
EDGE_AUC = "edge_auc"
SKIPPED_SAMPLES = "skipped_samples"
SCORES = (MIOU, BOUNDARY_IOU, BF)
SCORE_TITLES = {MIOU: "mIoU", BOUNDARY_IOU: "Boundary IoU", BF: "BF"}

# Training-only scalars.
STEP_TIME = "train/step_time"
PEAK_MEMORY = "train/peak_memory_mb"
SOLVER_ITERATIONS = "train/solver_iterations"
SOLVER_RESIDUAL = "train/solver_residual"
# Spectral heads with eigenpairs: the batch means of the second-smallest eigenvalue (the
# Fiedler value, which bounds the best cut's conductance) and of the largest one computed.
FIEDLER = "train/fiedler"
LAMBDA_K = "train/lambda_k"
# The share of the response's mass on noise-floor directions (when the head computed it).
NOISE_ENERGY = "train/noise_energy"

# Media (W&B only).
PANEL = "val/panel"
OVERLAY = "val/overlay"
RESPONSE = "val/response"


def metric(stage: str, name: str) -> str:
    """``val/mIoU`` and the like."""
    return f"{stage}/{name}"


def loss_term(stage: str, term: str) -> str:
    """The unweighted value of one term of a composite loss."""
    return f"{stage}/{LOSS}/{term}"


CLASS_IOU_INFIX = "/iou/"


def class_iou(stage: str, class_name: str) -> str:
    return f"{stage}{CLASS_IOU_INFIX}{class_name}"


def trimap(stage: str, width: int) -> str:
    """mIoU inside the band of ``width`` pixels around the true boundaries."""
    return f"{stage}/trimap_iou@{width}"


def trimap_width(key: str) -> int | None:
    """The band width of a :func:`trimap` key, None for any other key."""
    head, sep, width = key.rpartition("/trimap_iou@")
    return int(width) if sep and head in STAGES and width.isdigit() else None


def class_scores(stage: str) -> str:
    return f"{stage}/class_scores"


def class_scores_plot(stage: str) -> str:
    return f"{stage}/class_scores_plot"


def confusion(stage: str) -> str:
    return f"{stage}/confusion"


# Metrics whose W&B run summary is their best (max) value, not the last one: what a W&B
# sweep's `metric.name` should name (sweeps/*.yaml).
WANDB_MAX_SUMMARY = tuple(metric("val", score) for score in SCORES)

# Flat keys cheeger.train adds to the W&B run config, beside the flattened config. They
# hold no dots: W&B cannot tell a flat dotted config key from a nested one in a panel.
HEAD_VARIANT = "head_variant"
CHOICE_PREFIX = "choice_"
# The config groups whose chosen option is recorded as choice_<group>.
CHOICE_GROUPS = ("head", "affinity", "laplacian", "solver", "response", "loss", "postprocess")
# The numeric knobs sweeps vary (sweeps/*.yaml), as config paths.
SWEPT_PATHS = ("k", "knn", "response.temper")


def choice(group: str) -> str:
    """The run-config key holding the option picked for a config group (choice_solver)."""
    return f"{CHOICE_PREFIX}{group}"


def flat(path: str) -> str:
    """The dotless run-config key of a config path (response.temper -> response_temper)."""
    return path.replace(".", "_")


# The sweep's parameters as run-config keys: the knobs and the group choices.
SWEEP_PARAMETERS = (
    *(flat(path) for path in SWEPT_PATHS),
    choice("solver"),
    choice("response"),
    choice("affinity"),
)


def head_variant(cfg: Mapping[str, Any], choices: Mapping[str, Any]) -> str:
    """One label per head design: ``conv``, or ``<head>/<solver>/<response>/<mode>``.

    Args:
        cfg: the run's resolved config (its ``head`` node).
        choices: Hydra's chosen option per config group (``hydra.runtime.choices``);
            groups it lacks are named by their ``_target_`` class.
    """
    head = cfg.get("head") or {}
    parts = [_option(cfg, choices, "head")]
    if "solver" in head or "response" in head:
        parts += [_option(cfg, choices, "solver"), _option(cfg, choices, "response")]
        parts.append(str(head.get("mode", "")))
    return "/".join(part for part in parts if part)


def _option(cfg: Mapping[str, Any], choices: Mapping[str, Any], group: str) -> str:
    if choices.get(group):
        return str(choices[group])
    node = cfg.get(group) or {}
    target = node.get("_target_", "") if isinstance(node, Mapping) else ""
    return str(target).rsplit(".", 1)[-1]


def run_config_extras(cfg: Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, Any]:
    """The flat keys added to the W&B run config: the head variant, the group choices and
    the swept knobs the run's config has."""
    extras: dict[str, Any] = {HEAD_VARIANT: head_variant(cfg, choices)}
    for group in CHOICE_GROUPS:
        option = choices.get(group)
        if option is not None:
            extras[choice(group)] = str(option)
    for path in SWEPT_PATHS:
        node: Any = cfg
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None and not isinstance(node, Mapping):
            extras[flat(path)] = node
    return extras
