"""A W&B workspace (and report) comparing heads: ``python -m cheeger.dashboard``.

Builds, with ``wandb-workspaces`` (W&B's workspaces and reports as code; the ``wandb``
extra: ``pip install -e '.[wandb]'``), a workspace whose runs are grouped by the
``head_variant`` that ``cheeger.train`` writes into every W&B run config, with four
sections:

* Heads: val mIoU, Boundary IoU and BF over steps (mean and min/max band over seeds),
  bars of the test scores and of the trimap curve per variant, test mIoU against test
  Boundary IoU;
* Sweep: parallel coordinates from k, knn, temper and the solver, response and affinity
  choices to val mIoU and Boundary IoU, and the parameters' importance for val mIoU;
* Spectral: the Fiedler value and largest eigenvalue, the noise energy, the solver's
  iterations and residual, and the response plots h(λ);
* Pictures: the prediction panels (with eigenvectors), the mask overlays, the confusion
  matrices and per-class bars.

Every key a panel names comes from ``cheeger.run.keys``, the names the logger uses.
The layout is always written to ``<run dir>/dashboard.json`` (the workspace spec as W&B
stores it, and the report's sections and panels). With an API key the workspace (and with
``report=true`` the report) is saved to W&B and its URL printed; without one nothing
goes to the network, and the command says how to publish later.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cheeger.run import keys
from cheeger.run.loggers import wandb_api_key_available

log = logging.getLogger("cheeger.dashboard")

INSTALL_HINT = "pip install -e '.[wandb]'  (or `make install`, whose dev extra includes it)"
SPEC_FILE = "dashboard.json"
# Lightning's WandbLogger logs the global step beside every row: the curves' x axis.
GLOBAL_STEP = "trainer/global_step"


@dataclass(frozen=True)
class Panel:
    """One panel, by what it shows.

    Attributes:
        kind: line (history over steps) | bar (summary per group) | scatter (summary x
            against summary y) | parallel (config and summary axes) | importance (of the
            config for ``metrics[0]``) | media (logged images).
        metrics: metric keys (history for line, summary otherwise).
        config: run-config keys (parallel coordinates' axes).
        media: media keys.
        grouped: grouped by ``head_variant`` with a band over the group's runs.
    """

    kind: str
    title: str
    metrics: tuple[str, ...] = ()
    config: tuple[str, ...] = ()
    media: tuple[str, ...] = ()
    grouped: bool = True


@dataclass(frozen=True)
class Section:
    name: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def layout(trimap_widths: Sequence[int] = (1, 2, 4, 8, 16)) -> list[Section]:
    """The dashboard's sections; ``trimap_widths`` as ``metrics.trimap_widths`` of the runs."""
    val = {score: keys.metric("val", score) for score in keys.SCORES}
    test = {score: keys.metric("test", score) for score in keys.SCORES}
    heads = [
        Panel("line", f"val {keys.SCORE_TITLES[score]}", (val[score],)) for score in keys.SCORES
    ]
    heads += [
        Panel("bar", "test scores (best-val checkpoint)", tuple(test.values())),
        Panel(
            "bar",
            "test trimap IoU by band width (px)",
            tuple(keys.trimap("test", w) for w in trimap_widths),
        ),
        Panel(
            "scatter",
            "test mIoU against test Boundary IoU",
            (test[keys.MIOU], test[keys.BOUNDARY_IOU]),
            grouped=False,
        ),
    ]
    sweep = [
        Panel(
            "parallel",
            "sweep: knobs -> val scores",
            (val[keys.MIOU], val[keys.BOUNDARY_IOU]),
            config=keys.SWEEP_PARAMETERS,
            grouped=False,
        ),
        Panel("importance", "parameter importance for val mIoU", (val[keys.MIOU],), grouped=False),
    ]
    spectral = [
        Panel("line", "Fiedler value λ2 (batch mean)", (keys.FIEDLER,)),
        Panel("line", "largest eigenvalue computed", (keys.LAMBDA_K,)),
        Panel("line", "noise energy of the response", (keys.NOISE_ENERGY,)),
        Panel("line", "solver iterations", (keys.SOLVER_ITERATIONS,)),
        Panel("line", "solver residual", (keys.SOLVER_RESIDUAL,)),
        Panel("media", "spectral response h(λ)", media=(keys.RESPONSE,), grouped=False),
    ]
    pictures = [
        Panel("media", "prediction panels", media=(keys.PANEL,), grouped=False),
        Panel("media", "prediction / ground truth overlays", media=(keys.OVERLAY,), grouped=False),
        Panel(
            "media",
            "confusion and per-class scores",
            media=tuple(
                key(stage)
                for stage in ("val", "test")
                for key in (keys.confusion, keys.class_scores_plot)
            ),
            grouped=False,
        ),
    ]
    return [
        Section("Heads", tuple(heads)),
        Section("Sweep", tuple(sweep)),
        Section("Spectral", tuple(spectral)),
        Section("Pictures", tuple(pictures)),
    ]


def referenced_keys(sections: Sequence[Section]) -> dict[str, set[str]]:
    """The keys the panels name: ``history`` (line metrics, media), ``summary`` (the
    other metrics) and ``config`` (axes, plus ``head_variant`` when a panel groups)."""
    found: dict[str, set[str]] = {"history": set(), "summary": set(), "config": set()}
    for section in sections:
        for panel in section.panels:
            found["history" if panel.kind == "line" else "summary"].update(panel.metrics)
            found["history"].update(panel.media)
            found["config"].update(panel.config)
            if panel.grouped:
                found["config"].add(keys.HEAD_VARIANT)
    found["config"].add(keys.HEAD_VARIANT)  # the runset's grouping
    return found


def _wandb_workspaces():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
        from wandb_workspaces import expr
    except ImportError as error:
        raise SystemExit(
            f"cheeger.dashboard needs the wandb-workspaces package ({error}); install it "
            f"with: {INSTALL_HINT}"
        ) from None
    return ws, wr, expr


def _panel(panel: Panel):
    _, wr, _ = _wandb_workspaces()
    group = {"groupby": keys.HEAD_VARIANT, "groupby_aggfunc": "mean"} if panel.grouped else {}
    if panel.kind == "line":
        return wr.LinePlot(
            title=panel.title,
            x=GLOBAL_STEP,
            y=list(panel.metrics),
            **group,
            **({"groupby_rangefunc": "minmax"} if group else {}),
        )
    if panel.kind == "bar":
        return wr.BarPlot(
            title=panel.title,
            metrics=list(panel.metrics),
            orientation="v",
            **group,
            **({"groupby_rangefunc": "stddev"} if group else {}),
        )
    if panel.kind == "scatter":
        x, y = panel.metrics
        return wr.ScatterPlot(title=panel.title, x=wr.SummaryMetric(x), y=wr.SummaryMetric(y))
    if panel.kind == "parallel":
        columns = [wr.Config(name) for name in panel.config]
        columns += [wr.SummaryMetric(name) for name in panel.metrics]
        return wr.ParallelCoordinatesPlot(
            title=panel.title,
            columns=[wr.ParallelCoordinatesPlotColumn(metric=column) for column in columns],
        )
    if panel.kind == "importance":
        return wr.ParameterImportancePlot(with_respect_to=panel.metrics[0])
    if panel.kind == "media":
        return wr.MediaBrowser(title=panel.title, media_keys=list(panel.media))
    raise ValueError(
        f"Panel.kind must be line|bar|scatter|parallel|importance|media, found {panel.kind!r}"
    )


def workspace(sections: Sequence[Section], entity: str, project: str, name: str):
    """The ``wandb_workspaces`` Workspace of ``sections``, runs grouped by head variant."""
    ws, _, expr = _wandb_workspaces()
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(name=s.name, panels=[_panel(p) for p in s.panels], is_open=True)
            for s in sections
        ],
        runset_settings=ws.RunsetSettings(groupby=[expr.Config(keys.HEAD_VARIANT)]),
    )


def report(sections: Sequence[Section], entity: str, project: str, title: str):
    """A report with one heading and panel grid per section (saving it needs the API)."""
    _, wr, _ = _wandb_workspaces()
    blocks: list[Any] = [
        wr.P(f"Heads compared by {keys.HEAD_VARIANT}, built by cheeger.dashboard.")
    ]
    for section in sections:
        runset = wr.Runset(entity=entity, project=project, groupby=[keys.HEAD_VARIANT])
        blocks += [
            wr.H1(section.name),
            wr.PanelGrid(runsets=[runset], panels=[_panel(p) for p in section.panels]),
        ]
    return wr.Report(project=project, entity=entity, title=title, blocks=blocks)


def can_publish() -> bool:
    """True when an API key is available and WANDB_MODE does not keep W&B offline."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    return mode not in ("offline", "disabled", "dryrun") and wandb_api_key_available()


def build(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Write ``out_dir/dashboard.json``; save to W&B when ``cfg.offline`` allows it.

    Returns what was written: the workspace spec, the report layout, and the URLs saved.
    """
    sections = layout(list(cfg.trimap_widths))
    online = can_publish() if cfg.offline is None else not cfg.offline
    entity = cfg.entity
    if entity is None:
        if online:
            import wandb

            entity = wandb.Api().default_entity
        else:
            entity = "ENTITY"  # a placeholder: the spec is published under the real one
    space = workspace(sections, str(entity), str(cfg.project), str(cfg.name))
    result: dict[str, Any] = {
        "workspace": space._spec,
        "report": {
            "title": str(cfg.name),
            "sections": [
                {"name": s.name, "panels": [asdict(p) for p in s.panels]} for s in sections
            ],
        },
        "urls": {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SPEC_FILE
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not online:
        print(
            f"W&B stays offline (no API key, WANDB_MODE={os.environ.get('WANDB_MODE', '')!r} "
            f"or offline=true): wrote the dashboard spec to {path}. To publish it, log in "
            "(`wandb login` or WANDB_API_KEY=...) and run `python -m cheeger.dashboard "
            f"entity=<entity> project={cfg.project}{' report=true' if cfg.report else ''}` again.",
            flush=True,
        )
        return result
    try:
        space.save()
        result["urls"]["workspace"] = space.url
        if cfg.report:
            saved = report(sections, str(entity), str(cfg.project), str(cfg.name))
            saved.save()
            result["urls"]["report"] = saved.url
    except Exception as error:  # network, permissions, an unknown entity or project
        raise SystemExit(
            f"cheeger.dashboard: saving to W&B (entity={entity!r}, project={cfg.project!r}) "
            f"failed: {type(error).__name__}: {error}. The spec is in {path}."
        ) from error
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for kind, url in result["urls"].items():
        print(f"W&B {kind}: {url}", flush=True)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="dashboard")
def main(cfg: DictConfig) -> None:
    _wandb_workspaces()  # a missing extra stops here, with the install command
    build(cfg, Path(cfg.paths.output_dir))


if __name__ == "__main__":
    main()
