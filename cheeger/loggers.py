"""Experiment loggers with safe defaults.

``wandb_logger`` builds Lightning's ``WandbLogger`` but never lets a missing
API key or a missing network stop a run: without a key (``WANDB_API_KEY`` or a
``wandb login`` entry in ~/.netrc) it switches to offline mode with one warning;
the run can be uploaded later with ``wandb sync <dir>``. ``WANDB_MODE=offline``
or ``disabled`` in the environment is honoured as is.
"""

from __future__ import annotations

import netrc
import os
import warnings
from collections.abc import Sequence
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_available() -> bool:
    """True if an API key is set in the environment or stored by ``wandb login``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host or "api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_logger(
    project: str = "cheeger",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    offline: bool = False,
    log_model: bool = False,
    entity: str | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` that falls back to offline mode when it cannot go online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if (
        not offline
        and mode not in ("offline", "disabled", "dryrun")
        and not wandb_api_key_available()
    ):
        warnings.warn(
            "logger.wandb: no W&B API key found (WANDB_API_KEY or `wandb login`); "
            f"logging offline under {save_dir}/wandb. Upload later with `wandb sync`.",
            stacklevel=2,
        )
        offline = True
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        tags=list(tags) if tags else None,
        offline=offline,
        log_model=log_model,
        entity=entity,
    )
