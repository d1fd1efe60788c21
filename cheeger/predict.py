"""Segment images: ``python -m cheeger.predict ckpt_path=... input=<path> output=<folder>``.

The model is rebuilt from the checkpoint (``cheeger.eval.load_module``). Each
input image, of any size, becomes three files in ``output`` (mirroring the
input's subfolders when ``input`` is a folder):

* ``<stem>_labels.png``: the predicted class ids (train ids), 8-bit single channel;
* ``<stem>_color.png``: the ids drawn in the class palette;
* ``<stem>_overlay.png``: the image blended with the palette colours
  (``alpha`` of colour).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cheeger.data.classes import class_palette
from cheeger.data.dataset import normalize_image
from cheeger.data.image_io import IMAGE_SUFFIXES, read_rgb, write_label_map, write_png
from cheeger.devices import ensure_mps_fallback, local_accelerator
from cheeger.eval import load_module
from cheeger.inference import Inference
from cheeger.module import SegmentationModule
from cheeger.runner import resolve_ckpt_path


def find_inputs(path: str | Path, exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """(base folder, image files): one file, or every image file below a folder (sorted).

    Files below ``exclude`` (the output folder, when it lies inside the input) are skipped,
    so a second run does not segment the first run's pictures.

    Raises:
        FileNotFoundError: naming ``input`` when it is missing or holds no image.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input={str(path)!r}: no such image file or folder")
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and (skip is None or skip not in p.resolve().parents)
    )
    if not files:
        raise FileNotFoundError(
            f"input={str(path)!r} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return path, files


def overlay(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) image + alpha color, rounded; (H, W, 3) uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], found {alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


@torch.no_grad()
def predict_labels(
    module: SegmentationModule,
    image: np.ndarray,
    inference: Inference,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> predicted class ids (H, W) uint8, for any H and W."""
    batch = torch.from_numpy(normalize_image(image, mean, std))[None].to(module.device)
    logits = inference(lambda x: module(x)[0], batch, module.input_multiple)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def predict(cfg: DictConfig) -> list[Path]:
    """Run ``cfg.ckpt_path`` on every image of ``cfg.input``; returns the files written."""
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path)
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
        raise ValueError(
            f"ckpt_path must name a checkpoint file or run directory, found {ckpt_path!r}"
        )
    out_dir = Path(cfg.output).expanduser()
    base, files = find_inputs(cfg.input, exclude=out_dir)
    device = local_accelerator(cfg.device)  # auto: CUDA, else MPS, else CPU
    module = load_module(ckpt_path).to(device).eval()
    inference = instantiate(cfg.inference)
    stored = (module.model_config or {}).get("dataset", {}).get("palette")
    colors = OmegaConf.to_container(cfg.palette) if cfg.get("palette") is not None else stored
    table = class_palette(module.num_classes, colors)
    written: list[Path] = []
    for path in tqdm(files, desc="predict", unit="image"):
        image = read_rgb(path)
        labels = predict_labels(module, image, inference, cfg.mean, cfg.std)
        color = table[labels]
        target = out_dir / path.parent.relative_to(base) / path.stem
        written += [
            write_label_map(f"{target}_labels.png", labels),
            write_png(f"{target}_color.png", color),
            write_png(f"{target}_overlay.png", overlay(image, color, cfg.alpha)),
        ]
    print(f"{len(files)} image(s) segmented into {out_dir}", flush=True)
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    ensure_mps_fallback(cfg.device)
    predict(cfg)


if __name__ == "__main__":
    main()
