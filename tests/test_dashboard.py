"""cheeger.dashboard: every key a panel names is one real runs log; offline it only writes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from cheeger import dashboard
from cheeger.run import keys
from cheeger.run.wandb_offline import offline_runs, read_offline_run
from tests.conftest import CONF, ROOT


def _config(**overrides):
    cfg = OmegaConf.load(CONF / "dashboard.yaml")
    cfg.pop("defaults")
    cfg.merge_with(overrides)
    return cfg


def _logged(sweep):
    """Per job: (offline W&B run, CSV columns, final metrics)."""
    out = []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        (path,) = offline_runs(job)
        columns = set(next(csv.reader((job / "metrics.csv").open())))
        final = json.loads((job / "final_metrics.json").read_text())
        out.append((read_offline_run(path), columns, final))
    return out


def test_every_key_the_panels_name_is_logged_by_real_runs(head_sweeps, tmp_path):
    result = dashboard.build(_config(offline=True, entity="team"), tmp_path)
    spec_text = json.dumps(result["workspace"])
    referenced = dashboard.referenced_keys(dashboard.layout())
    spectral = _logged(head_sweeps["spectral"])
    conv = _logged(head_sweeps["conv"])
    for run, columns, final in spectral:
        # The spectral runs log every key of every section (W&B history, summary, config).
        assert referenced["history"] <= run.history_keys, referenced["history"] - run.history_keys
        assert referenced["summary"] <= set(run.summary), referenced["summary"] - set(run.summary)
        assert referenced["config"] <= set(run.config), referenced["config"] - set(run.config)
        scalars = {k for k in referenced["history"] | referenced["summary"] if "/" in k}
        media = {keys.PANEL, keys.OVERLAY, keys.RESPONSE}
        media |= {f(s) for s in ("val", "test") for f in (keys.confusion, keys.class_scores_plot)}
        # The CSV log holds the same scalars (media are W&B only), final_metrics the summaries.
        assert scalars - media <= columns, (scalars - media) - columns
        assert referenced["summary"] <= set(final)
        assert run.config[keys.HEAD_VARIANT] == "spectral/lanczos/temper/embedding"
        assert run.config[keys.choice("solver")] == "lanczos"
        assert run.config[keys.flat("response.temper")] == 1.0
    heads = next(s for s in dashboard.layout() if s.name == "Heads")
    for run, columns, _ in conv:
        # The conv head logs everything the Heads section shows.
        for panel in heads.panels:
            assert set(panel.metrics) <= columns
            assert set(panel.metrics) <= run.history_keys | set(run.summary)
        assert run.config[keys.HEAD_VARIANT] == "conv"
    # The spec W&B receives names these keys (metrics, media, config axes, the grouping).
    for key in set().union(*referenced.values()):
        assert key in spec_text, key
    assert '"grouping": [{"section": "config", "name": "head_variant.value"}]' in spec_text
    written = json.loads((tmp_path / dashboard.SPEC_FILE).read_text())
    assert [s["name"] for s in written["report"]["sections"]] == [
        "Heads",
        "Sweep",
        "Spectral",
        "Pictures",
    ]
    assert written["urls"] == {}


def test_without_an_api_key_the_command_writes_the_spec_and_says_how_to_publish(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    # A closed port as the server: any attempt to reach it would fail the command.
    env.update(NETRC=str(netrc), WANDB_BASE_URL="http://127.0.0.1:9", HOME=str(tmp_path))
    command = [sys.executable, "-m", "cheeger.dashboard", "project=p", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wandb login" in result.stdout and "entity=<entity>" in result.stdout
    spec = json.loads((tmp_path / dashboard.SPEC_FILE).read_text())
    assert spec["workspace"]["project"] == "p"
    assert spec["workspace"]["entity"] == "ENTITY"


def test_a_failed_save_names_the_spec_it_left(tmp_path, monkeypatch):
    import wandb_workspaces.workspaces as ws

    def refuse(self):
        raise ConnectionError("server unreachable")

    monkeypatch.setattr(ws.Workspace, "save", refuse)
    with pytest.raises(SystemExit, match=r"saving to W&B .*ConnectionError.*dashboard.json"):
        dashboard.build(_config(offline=False, entity="team"), tmp_path)
    assert (tmp_path / dashboard.SPEC_FILE).is_file()


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[wandb\]'"):
        dashboard.workspace(dashboard.layout(), "team", "p", "n")


def test_an_unknown_panel_kind_is_refused():
    with pytest.raises(ValueError, match="Panel.kind must be"):
        dashboard._panel(dashboard.Panel("pie", "t", ("val/mIoU",)))
