"""Segment images: ``python -m cheeger.predict ckpt_path=... input=<path> output=<folder>``.

The model is rebuilt from the checkpoint (``cheeger.module.load_module``). Each
input image, of any size, becomes three files in ``output`` (mirroring the
input's subfolders when ``input`` is a folder; an input whose stem another input in
its folder shares keeps its extension in the name, ``a_png_labels.png``):

* ``<stem>_labels.png``: the predicted class ids (train ids), 8-bit single channel;
* ``<stem>_color.png``: the ids drawn in the class palette;
* ``<stem>_overlay.png``: the image blended with the palette colours
  (``alpha`` of colour).

Existing files are never replaced unless ``overwrite=true``, and an input image never.
The normalisation is the one stored in the checkpoint (``mean``/``std`` only matter
for checkpoints written before cheeger stored it).
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
from cheeger.data.dataset import IMAGENET_MEAN, IMAGENET_STD, check_normalization, normalize_image
from cheeger.data.image_io import (
    IMAGE_SUFFIXES,
    image_files,
    read_rgb,
    write_label_map,
    write_png,
)
from cheeger.models.inference import Inference
from cheeger.module import SegmentationModule, load_module, stored_normalization
from cheeger.run.config_schema import validate_config
from cheeger.run.devices import ensure_mps_fallback, local_accelerator
from cheeger.run.runner import resolve_ckpt_path

OUTPUT_KINDS = ("labels", "color", "overlay")


def _outputs_of_others(files: list[Path]) -> set[Path]:
    """Files among ``files`` named like a predict output of another file in their folder.

    ``x_labels.png`` is such a file when ``x.<ext>`` (or, after a stem clash,
    ``x_<ext>``'s source) sits beside it: a run writing into its input folder must
    not segment its own earlier results.
    """
    names = {(p.parent, n) for p in files for n in (p.stem, f"{p.stem}_{p.suffix[1:]}")}
    return {
        p
        for p in files
        for kind in OUTPUT_KINDS
        if p.name.endswith(f"_{kind}.png") and (p.parent, p.name[: -len(f"_{kind}.png")]) in names
    }


def find_inputs(path: str | Path, output: Path | None = None) -> tuple[Path, list[Path]]:
    """(base folder, image files): one file, or every visible image file below a folder.

    When the output folder lies inside the input folder, files below it are skipped;
    when it is the input folder, earlier results of predict (``<stem>_labels.png``
    beside ``<stem>.<ext>``, and so on) are skipped. Either way a second run does not
    segment the first run's pictures. Hidden and AppleDouble (``._x.png``) files are
    skipped as well.

    Raises:
        FileNotFoundError: naming ``input`` when it is missing or holds no image.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input={str(path)!r}: no such image file or folder")
    files = image_files(path.rglob("*"), path)
    out = output.expanduser().resolve() if output is not None else None
    if out == path.resolve():
        earlier = _outputs_of_others(files)
        files = [p for p in files if p not in earlier]
    elif out is not None:
        files = [p for p in files if out not in p.resolve().parents]
    if not files:
        raise FileNotFoundError(
            f"input={str(path)!r} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return path, files


def output_prefixes(base: Path, files: list[Path], out_dir: Path) -> list[Path]:
    """Per input, the path its outputs start with: ``out_dir/<subfolder>/<stem>``.

    Inputs that share a stem in one folder (``a.png``, ``a.jpg``; case-insensitively,
    as on macOS and Windows file systems) keep their extension in the name instead
    (``a_png``, ``a_jpg``), so no input's results replace another's.

    Raises:
        ValueError: two inputs that would still write the same file.
    """

    def key(p: Path) -> tuple[Path, str]:
        return p.parent, p.stem.lower()

    counts: dict[tuple[Path, str], int] = {}
    for p in files:
        counts[key(p)] = counts.get(key(p), 0) + 1
    prefixes, seen = [], {}
    for p in files:
        name = p.stem if counts[key(p)] == 1 else f"{p.stem}_{p.suffix[1:]}"
        prefix = out_dir / p.parent.relative_to(base) / name
        clash = seen.setdefault(str(prefix).lower(), p)
        if clash != p:
            raise ValueError(
                f"input={str(base)!r}: {clash} and {p} would both write {prefix}_*.png; "
                "rename one of them"
            )
        prefixes.append(prefix)
    return prefixes


def output_files(prefix: Path) -> dict[str, Path]:
    """``{kind: <prefix>_<kind>.png}`` for the labels, color and overlay outputs."""
    return {kind: prefix.with_name(f"{prefix.name}_{kind}.png") for kind in OUTPUT_KINDS}


def check_targets(files: list[Path], targets: list[Path], overwrite: bool) -> None:
    """Refuse to write over an input image, or over any existing file unless ``overwrite``.

    Raises:
        FileExistsError: naming the files (the first few) and ``overwrite=true``.
    """
    inputs = {p.resolve() for p in files}
    over_input = [t for t in targets if t.resolve() in inputs]
    if over_input:
        raise FileExistsError(
            f"predict would write over its input image {over_input[0]}; choose another output="
        )
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(t) for t in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"output= holds {len(existing)} file(s) predict would write: {shown}{more}; "
            "pass overwrite=true to replace them, or choose another output="
        )


def check_predict_config(cfg: DictConfig) -> None:
    """Check ``alpha``, ``mean``/``std`` and ``overwrite`` before any file or model is read.

    Raises:
        ValueError: naming the key, the expected value and the value found.
    """
    validate_config(cfg)  # alpha in [0, 1], overwrite a bool
    if (cfg.mean is None) != (cfg.std is None):
        raise ValueError(
            f"mean and std must be set together or both null, found mean={cfg.mean!r}, "
            f"std={cfg.std!r}"
        )
    if cfg.mean is not None:
        check_normalization(cfg.mean, cfg.std, prefix="")


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
    """Run ``cfg.ckpt_path`` on every image of ``cfg.input``; returns the files written.

    Every check (config, inputs, output names, existing files) runs before the model
    is loaded, so a refused run has read and written nothing.
    """
    check_predict_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path)
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
        raise ValueError(
            f"ckpt_path must name a checkpoint file or run directory, found {ckpt_path!r}"
        )
    out_dir = Path(cfg.output).expanduser()
    base, files = find_inputs(cfg.input, output=out_dir)
    outputs = [output_files(p) for p in output_prefixes(base, files, out_dir)]
    check_targets(files, [t for o in outputs for t in o.values()], cfg.overwrite)
    device = local_accelerator(cfg.device)  # auto: CUDA, else MPS, else CPU
    module = load_module(ckpt_path).to(device).eval()
    asked = OmegaConf.create({"mean": cfg.mean, "std": cfg.std})
    norm = stored_normalization(module, asked, ckpt_path, prefix="")
    mean = norm.get("mean", cfg.mean if cfg.mean is not None else IMAGENET_MEAN)
    std = norm.get("std", cfg.std if cfg.std is not None else IMAGENET_STD)
    inference = instantiate(cfg.inference)
    stored = (module.model_config or {}).get("dataset", {}).get("palette")
    colors = OmegaConf.to_container(cfg.palette) if cfg.get("palette") is not None else stored
    table = class_palette(module.num_classes, colors)
    written: list[Path] = []
    for path, target in tqdm(list(zip(files, outputs, strict=True)), desc="predict", unit="image"):
        image = read_rgb(path)
        labels = predict_labels(module, image, inference, mean, std)
        color = table[labels]
        written += [
            write_label_map(target["labels"], labels),
            write_png(target["color"], color),
            write_png(target["overlay"], overlay(image, color, cfg.alpha)),
        ]
    print(f"{len(files)} image(s) segmented into {out_dir}", flush=True)
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    ensure_mps_fallback(cfg.device)
    predict(cfg)


if __name__ == "__main__":
    main()
