"""``synthetic_city``: a procedural street-scene dataset that needs no files.

Every sample is drawn on the fly from a random generator seeded by the dataset
seed and the sample's global index, so index ``i`` of a split is always the
same image and mask, on any machine, without anything on disk.

The scene is a pinhole camera (focal length ``f``, height ``h`` above a flat
ground, horizon row ``y0``, vanishing column ``x0``) looking down a straight
street. A world point ``(X, Y, Z)`` (lateral, up, depth; metres) lands on the
pixel ``(x0 + f X / Z, y0 + f (h - Y) / Z)``, so everything shrinks towards
the vanishing point and cars, people and poles are scaled by their distance.

What is drawn, with the Cityscapes train id it is labelled with:

========  ===============  ==================================================
train id  class            drawn as
========  ===============  ==================================================
0         road             asphalt between the kerbs, with lane markings,
                           sometimes a zebra crossing, cast shadows
1         sidewalk         paved strips alongside the road (tiles, kerb)
2         building         facades on both sides and a distant row across
                           the street; window grids, varied colours
4         fence            railings or plank fences along front gardens
5         pole             street lamps (with arm) and sign posts, 1-3 px wide
                           at 128x256
7         traffic sign     round, triangular, square or diamond boards on
                           poles, some seen from behind (grey)
8         vegetation       trees (trunk and irregular crown), bushes, hedges,
                           distant tree lines; leafy noise texture
9         terrain          grass verges, front gardens, lawns behind gaps
10        sky              gradient with clouds, blue or overcast
11        person           thin upright figures on sidewalks, a few crossing
13        car              boxes with cabin, dark windows, wheels and lights;
                           parked rows and moving cars occlude each other
255       (ignored)        the ego-vehicle hood at the bottom of most images,
                           and rare unlabelled clutter (bins, crates)
========  ===============  ==================================================

Difficulty comes from the appearance, not the geometry: every class has a
colour range that overlaps others (grey road, grey buildings, grey poles and
grey cars; green grass, green hedges, green trees), each image gets its own
illumination (gain, colour cast, gradient, sun shadows) and haze, and the
image is textured, blurred and noisy. The knobs ``noise_std``, ``blur_sigma``
and ``color_jitter`` scale the noise, the blur and all random colour and
exposure changes; ``color_jitter=0`` draws every class in the first colour of
its family (shading, haze and texture remain). The knobs change pixels only:
for a given seed and index the mask is the same whatever their values.

Internals: the background (sky, ground, facades, fences, hedges, the far row)
is ray-cast per pixel with numpy against a few planes and z-buffered; objects
(cars, people, poles and signs, trees and bushes, clutter, the hood) are
polygons filled with cv2 from far to near. About 10-15 ms per 128x256 sample
on one CPU core; the fixed per-object cost dominates below that size.

Run ``python -m cheeger.data.synthetic_city out.png`` to look at a few samples.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import NormalDist

import cv2
import numpy as np

from cheeger.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, TRAIN_ID, SegClass, colorize
from cheeger.data.dataset import SampleSource

ROAD = TRAIN_ID["road"]
SIDEWALK = TRAIN_ID["sidewalk"]
BUILDING = TRAIN_ID["building"]
FENCE = TRAIN_ID["fence"]
POLE = TRAIN_ID["pole"]
SIGN = TRAIN_ID["traffic sign"]
VEGETATION = TRAIN_ID["vegetation"]
TERRAIN = TRAIN_ID["terrain"]
SKY = TRAIN_ID["sky"]
PERSON = TRAIN_ID["person"]
CAR = TRAIN_ID["car"]

PRESENT_TRAIN_IDS: tuple[int, ...] = (
    ROAD, SIDEWALK, BUILDING, FENCE, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR,
)

# Global index = split offset + index, so a split's length never changes what
# another split (or a longer version of the same split) contains.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
MAX_SPLIT_LENGTH = 10_000_000
DEFAULT_LENGTHS: dict[str, int] = {"train": 512, "val": 64, "test": 64}

Color = np.ndarray  # (3,) float RGB in [0, 1]

# Colour families per class (RGB in [0, 1]). Each image picks a family and
# perturbs it; instances perturb the image's colour again.
_ROAD_COLORS = ((0.30, 0.30, 0.31), (0.36, 0.35, 0.34), (0.24, 0.25, 0.27), (0.42, 0.41, 0.40))
_SIDEWALK_COLORS = (
    (0.52, 0.51, 0.49), (0.60, 0.55, 0.47), (0.55, 0.40, 0.35), (0.42, 0.42, 0.43),
    (0.66, 0.64, 0.60),
)
_BUILDING_COLORS = (
    (0.45, 0.45, 0.46), (0.62, 0.62, 0.60), (0.70, 0.64, 0.52), (0.80, 0.76, 0.64),
    (0.55, 0.31, 0.25), (0.42, 0.33, 0.26), (0.80, 0.71, 0.46), (0.76, 0.59, 0.56),
    (0.55, 0.60, 0.66), (0.86, 0.86, 0.84), (0.30, 0.30, 0.32), (0.48, 0.52, 0.42),
)
_WINDOW_COLORS = ((0.10, 0.12, 0.16), (0.20, 0.24, 0.30), (0.40, 0.50, 0.60), (0.28, 0.26, 0.24))
_FENCE_COLORS = (
    (0.45, 0.33, 0.22), (0.22, 0.24, 0.24), (0.20, 0.32, 0.25), (0.76, 0.76, 0.73),
    (0.55, 0.55, 0.53),
)
_POLE_COLORS = ((0.45, 0.46, 0.47), (0.22, 0.22, 0.23), (0.30, 0.38, 0.33), (0.62, 0.63, 0.64))
_SIGN_FACES = (  # (rim, face) pairs
    ((0.78, 0.12, 0.12), (0.90, 0.90, 0.88)),
    ((0.10, 0.28, 0.68), (0.12, 0.32, 0.75)),
    ((0.20, 0.20, 0.20), (0.92, 0.78, 0.12)),
    ((0.90, 0.90, 0.90), (0.15, 0.45, 0.25)),
    ((0.80, 0.80, 0.78), (0.80, 0.80, 0.78)),
)
_SIGN_BACK = (0.50, 0.50, 0.52)
_VEGETATION_COLORS = (
    (0.22, 0.35, 0.12), (0.30, 0.42, 0.18), (0.17, 0.27, 0.14), (0.38, 0.40, 0.20),
    (0.50, 0.42, 0.18),
)
_TERRAIN_COLORS = ((0.40, 0.50, 0.22), (0.55, 0.52, 0.30), (0.45, 0.38, 0.28), (0.32, 0.47, 0.20))
_TRUNK_COLOR = (0.30, 0.25, 0.20)
_SKY_ZENITH = ((0.30, 0.50, 0.85), (0.45, 0.62, 0.88), (0.60, 0.62, 0.66), (0.72, 0.74, 0.76))
_CLOTHES_COLORS = (
    (0.10, 0.10, 0.12), (0.14, 0.18, 0.32), (0.45, 0.45, 0.47), (0.66, 0.58, 0.45),
    (0.65, 0.14, 0.14), (0.85, 0.85, 0.83), (0.22, 0.30, 0.48), (0.30, 0.36, 0.22),
    (0.80, 0.60, 0.20),
)
_SKIN_COLORS = ((0.87, 0.70, 0.58), (0.70, 0.52, 0.40), (0.45, 0.32, 0.24), (0.93, 0.80, 0.70))
_CAR_COLORS = (
    (0.86, 0.86, 0.86), (0.66, 0.67, 0.69), (0.40, 0.41, 0.42), (0.08, 0.08, 0.09),
    (0.62, 0.10, 0.10), (0.15, 0.25, 0.52), (0.16, 0.30, 0.20), (0.68, 0.62, 0.50),
    (0.85, 0.70, 0.15),
)
_CLUTTER_COLORS = ((0.20, 0.35, 0.25), (0.55, 0.45, 0.30), (0.30, 0.30, 0.55), (0.70, 0.40, 0.10))

# Texture strength per label: `_FINE` multiplies grain noise, `_COARSE` a
# low-frequency colour drift. Vegetation gets its own leafy texture.
_FINE = np.zeros((1, 256), np.float32)  # shaped as a cv2.LUT table
_COARSE = np.zeros((1, 256), np.float32)
for _label, _fine, _coarse in (
    (ROAD, 0.07, 0.10), (SIDEWALK, 0.06, 0.07), (BUILDING, 0.05, 0.07), (FENCE, 0.06, 0.05),
    (POLE, 0.03, 0.04), (SIGN, 0.02, 0.03), (VEGETATION, 0.0, 0.12), (TERRAIN, 0.14, 0.14),
    (SKY, 0.01, 0.04), (PERSON, 0.06, 0.05), (CAR, 0.03, 0.04), (IGNORE_INDEX, 0.03, 0.06),
):
    _FINE[0, _label], _COARSE[0, _label] = _fine, _coarse


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return int(value)


def _non_negative_float(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, found {value!r}")
    return number


class SyntheticCity(SampleSource):
    """Procedural street scenes in the Cityscapes label space, generated per index.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; the splits never share a sample.
        height, width: image size in pixels (any aspect ratio; 32x64 to 512x1024
            is the intended range).
        lengths: number of samples per split; missing splits keep the default
            ``{"train": 512, "val": 64, "test": 64}``. Lengths never change content.
        seed: non-negative integer; the sample is a function of (seed, split, index).
        noise_std: standard deviation of the additive Gaussian sensor noise, in
            units of full intensity (1.0 = 255 grey levels).
        blur_sigma: Gaussian blur (optical softness) in output pixels; 0 disables.
        color_jitter: scale of all colour randomness (class colours, instance
            colours, exposure and colour cast); 0 uses each class's first colour.
        The three knobs change the image only, never the mask.
        cache: keep every generated sample in memory (H * W * 4 bytes each: 67 MB for
            512 samples at 128x256) so later epochs skip the ~20 ms generation per
            image. Each DataLoader worker holds its own copy.

    ``load(i)`` returns ``image`` (H, W, 3) uint8 RGB and ``mask`` (H, W) uint8 of
    train ids, with ``IGNORE_INDEX`` (255) on the ego hood and unlabelled clutter.
    """

    classes: tuple[SegClass, ...] = CITYSCAPES_CLASSES
    present_train_ids: tuple[int, ...] = PRESENT_TRAIN_IDS

    def __init__(
        self,
        split: str = "train",
        height: int = 128,
        width: int = 256,
        lengths: Mapping[str, int] | None = None,
        seed: int = 0,
        noise_std: float = 0.03,
        blur_sigma: float = 0.7,
        color_jitter: float = 1.0,
        cache: bool = False,
    ) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split: expected one of {tuple(SPLIT_OFFSETS)}, found {split!r}")
        self.split = split
        self.height = _positive_int("height", height)
        self.width = _positive_int("width", width)
        merged = dict(DEFAULT_LENGTHS)
        for name, value in (lengths or {}).items():
            if name not in SPLIT_OFFSETS:
                raise ValueError(
                    f"lengths: expected keys among {tuple(SPLIT_OFFSETS)}, found {name!r}"
                )
            count = _positive_int(f"lengths[{name!r}]", value)
            if count > MAX_SPLIT_LENGTH:
                raise ValueError(
                    f"lengths[{name!r}]: expected at most {MAX_SPLIT_LENGTH}, found {count}"
                )
            merged[name] = count
        self.lengths: dict[str, int] = merged
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, found {seed!r}")
        self.seed = int(seed)
        self.noise_std = _non_negative_float("noise_std", noise_std)
        self.blur_sigma = _non_negative_float("blur_sigma", blur_sigma)
        self.color_jitter = _non_negative_float("color_jitter", color_jitter)
        if not isinstance(cache, bool):
            raise ValueError(f"cache: expected true or false, found {cache!r}")
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.lengths[self.split]

    def _checked_index(self, index: int) -> int:
        position = operator.index(index)
        if not 0 <= position < len(self):
            raise IndexError(
                f"index: expected 0 <= index < {len(self)} for synthetic_city[{self.split}], "
                f"found {position}"
            )
        return position

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 RGB and mask (H, W) uint8 of train ids / 255."""
        position = self._checked_index(index)
        if self._cache is not None and position in self._cache:
            image, mask = self._cache[position]
            return image.copy(), mask.copy()  # callers may write into what they get
        rng = np.random.default_rng((self.seed, SPLIT_OFFSETS[self.split] + position))
        image, mask = render_street_scene(
            rng,
            self.height,
            self.width,
            noise_std=self.noise_std,
            blur_sigma=self.blur_sigma,
            color_jitter=self.color_jitter,
        )
        if self._cache is not None:
            self._cache[position] = (image.copy(), mask.copy())
        return image, mask

    def describe(self, index: int) -> str:
        return f"synthetic_city[{self.split}][{index}] (seed {self.seed})"

    def __repr__(self) -> str:
        return (
            f"SyntheticCity(split={self.split!r}, height={self.height}, width={self.width}, "
            f"length={len(self)}, seed={self.seed})"
        )


# --------------------------------------------------------------------------- #
# The functional core: one scene from one random generator.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Camera:
    height: int  # image rows
    width: int  # image columns
    focal: float  # pixels
    eye: float  # camera height above the ground, metres
    horizon: float  # image row of the horizon (continuous, row r spans [r, r+1))
    vanish_x: float  # image column of the vanishing point

    def point(self, X: float, Y: float, Z: float) -> tuple[float, float]:
        """One world point to continuous pixel coordinates (x, y)."""
        return (self.vanish_x + self.focal * X / Z, self.horizon + self.focal * (self.eye - Y) / Z)

    def ground_depth(self, row: float) -> float:
        """Depth of the ground point seen at a continuous image row below the horizon."""
        return self.focal * self.eye / max(row - self.horizon, 1e-3)


class _Palette:
    """Per-image colour choices; every call is jittered by `jitter`."""

    def __init__(self, rng: np.random.Generator, jitter: float) -> None:
        self.rng = rng
        self.jitter = jitter

    def pick(self, family: Sequence[Sequence[float]]) -> Color:
        # Draw even when jitter is 0, so that the knobs change colours, never layouts.
        choice = family[self.rng.integers(len(family))]
        return np.asarray(family[0] if self.jitter == 0 else choice, np.float32)

    def vary(self, color: Sequence[float] | np.ndarray, spread: float) -> Color:
        """A colour near `color`: a common brightness factor, per-channel gains (so
        dark colours keep their hue) and a small additive offset."""
        k = self.jitter * spread
        # Plain floats: for 3 channels numpy's per-call overhead dominates.
        draw = self.rng.standard_normal(7).tolist()
        bright = 1.0 + 2.5 * k * draw[0]
        return np.asarray([
            min(1.0, max(0.0, float(c) * bright * (1.0 + 1.5 * k * t) + 0.3 * k * o))
            for c, t, o in zip(color, draw[1:4], draw[4:], strict=True)
        ], np.float32)

    def sample(self, family: Sequence[Sequence[float]], spread: float) -> Color:
        return self.vary(self.pick(family), spread)


@dataclass
class _Row:
    """Vertical surfaces along one line (a street side, a garden edge, the far row).

    Segment k spans ``edges[k] <= u < edges[k+1]`` along the line and rises to
    ``top[k]`` metres (0 for a gap). ``kind`` 0 draws a window grid, 1 vertical
    bars (fences), 2 a plain surface with a rough top (hedges, tree lines).
    """

    edges: np.ndarray
    top: np.ndarray
    rough: np.ndarray
    kind: np.ndarray
    label: np.ndarray
    color: np.ndarray
    detail_color: np.ndarray
    bay: np.ndarray  # window / bar spacing along the line, metres
    opening: np.ndarray  # window width fraction of a bay, or gap fraction between bars
    storey: np.ndarray  # storey height, metres
    window_height: np.ndarray  # window height fraction of a storey


class _RowBuilder:
    def __init__(self) -> None:
        self.edges: list[float] = []
        self.fields: dict[str, list] = {name: [] for name in (
            "top", "rough", "kind", "label", "color", "detail_color", "bay", "opening", "storey",
            "window_height",
        )}

    def add(self, start: float, stop: float, *, top: float = 0.0, rough: float = 0.0,
            kind: int = 2, label: int = BUILDING, color: Sequence[float] = (0, 0, 0),
            detail_color: Sequence[float] = (0, 0, 0), bay: float = 1.0, opening: float = 0.0,
            storey: float = 3.0, window_height: float = 0.5) -> None:
        if not self.edges:
            self.edges.append(start)
        self.edges.append(stop)
        for name, value in (("top", top), ("rough", rough), ("kind", kind), ("label", label),
                            ("color", color), ("detail_color", detail_color), ("bay", bay),
                            ("opening", opening), ("storey", storey),
                            ("window_height", window_height)):
            self.fields[name].append(value)

    def build(self) -> _Row:
        f = self.fields
        return _Row(
            edges=np.asarray(self.edges, np.float64),
            top=np.asarray(f["top"], np.float32),
            rough=np.asarray(f["rough"], np.float32),
            kind=np.asarray(f["kind"], np.int8),
            label=np.asarray(f["label"], np.uint8),
            color=np.asarray(f["color"], np.float32).reshape(-1, 3),
            detail_color=np.asarray(f["detail_color"], np.float32).reshape(-1, 3),
            bay=np.asarray(f["bay"], np.float32),
            opening=np.asarray(f["opening"], np.float32),
            storey=np.asarray(f["storey"], np.float32),
            window_height=np.asarray(f["window_height"], np.float32),
        )


@dataclass
class _Street:
    """Lateral layout (metres, camera at X = 0) and the surfaces along it."""

    road: tuple[float, float]  # left and right kerb
    sidewalks: tuple[tuple[float, float], tuple[float, float]]  # (inner, outer) per side
    facades: tuple[float, float]  # facade line per side
    far: float  # depth of the far row across the street
    lanes: list[float]  # lane centres
    zone_bounds: np.ndarray  # ascending X boundaries of the ground zones
    zone_label: np.ndarray  # label per zone (len(zone_bounds) + 1)
    zone_color: np.ndarray  # colour per zone
    side_rows: tuple[_Row, _Row]
    garden_rows: tuple[_Row | None, _Row | None]
    garden_lines: tuple[float, float]
    far_row: _Row
    sun_side: int  # -1 / +1: the side whose buildings shade the street; 0: overcast
    shadow_slope: float  # shadow length per metre of building height
    shadow_skew: float  # shadow displacement along Z per metre across
    shadow_gain: float
    haze_color: Color
    visibility: float  # metres


# Mean variance of a bilinearly upsampled unit-variance grid ((2/3)^2 per axis).
_BILINEAR_VARIANCE = 4.0 / 9.0
# Standard normal quantiles at (k + 0.5) / 256: maps random bytes to Gaussian
# samples through cv2.LUT, several times faster than drawing normals directly.
_GAUSSIAN_LUT = np.asarray(
    [NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32
).reshape(1, 256)


def _gaussian_bytes(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) float32 samples of a 256-level discretised standard normal."""
    raw = np.frombuffer(rng.bytes(rows * cols), np.uint8).reshape(rows, cols)
    return cv2.LUT(raw, _GAUSSIAN_LUT)


def _fractal_noise(rng: np.random.Generator, height: int, width: int,
                   cells: Sequence[float]) -> np.ndarray:
    """Sum of bilinearly upsampled random grids, scaled to about unit deviation.

    ``cells`` are grid spacings in pixels; each octave is weighted by the square
    root of its spacing so coarse structure dominates. Shape (H, W) float32.
    """
    total = np.zeros((height, width), np.float32)
    variance = 0.0
    for cell in cells:
        if cell <= 1.0:  # pixel-level grain needs no upsampling
            total += _gaussian_bytes(rng, height, width)
            variance += 1.0
            continue
        rows = max(2, int(math.ceil(height / cell)) + 1)
        cols = max(2, int(math.ceil(width / cell)) + 1)
        grid = rng.standard_normal((rows, cols), dtype=np.float32)
        total += math.sqrt(cell) * cv2.resize(grid, (width, height),
                                              interpolation=cv2.INTER_LINEAR)
        variance += cell * _BILINEAR_VARIANCE
    total *= 1.0 / math.sqrt(variance)
    return total


def _sample_camera(rng: np.random.Generator, height: int, width: int) -> _Camera:
    # Focal length tied to max(W, 2H): a narrower image is a crop of the same camera.
    return _Camera(
        height=height,
        width=width,
        focal=float(rng.uniform(0.55, 0.85) * max(width, 2 * height)),
        eye=float(rng.uniform(1.3, 1.9)),
        horizon=float(rng.uniform(0.35, 0.55) * height),
        vanish_x=float(rng.uniform(0.35, 0.65) * width),
    )


def _facade_row(rng: np.random.Generator, pal: _Palette, stop: float, light: float) -> _Row:
    row = _RowBuilder()
    z = -2.0
    while z < stop:
        if rng.random() < 0.18:
            length = rng.uniform(3.0, 12.0)
            row.add(z, z + length)
        else:
            length = rng.uniform(6.0, 28.0)
            windows = rng.random() < 0.9
            row.add(
                z, z + length,
                top=float(np.exp(rng.uniform(np.log(4.0), np.log(30.0)))),
                kind=0 if windows else 2,
                label=BUILDING,
                color=pal.sample(_BUILDING_COLORS, 0.05) * light,
                detail_color=pal.sample(_WINDOW_COLORS, 0.05) * light,
                bay=rng.uniform(1.8, 3.6),
                opening=rng.uniform(0.35, 0.7),
                storey=rng.uniform(2.8, 3.6),
                window_height=rng.uniform(0.4, 0.65),
            )
        z += length
    return row.build()


def _far_row(rng: np.random.Generator, pal: _Palette, cam: _Camera, depth: float,
             vegetation: Color) -> _Row:
    left = (0.0 - cam.vanish_x) * depth / cam.focal - 5.0
    right = (cam.width - cam.vanish_x) * depth / cam.focal + 5.0
    open_street = rng.random() < 0.25
    row = _RowBuilder()
    x = left
    while x < right:
        width = rng.uniform(6.0, 30.0)
        draw = rng.random()
        if open_street or draw < 0.3:
            row.add(x, x + width, top=rng.uniform(4.0, 14.0), rough=rng.uniform(1.0, 3.0),
                    kind=2, label=VEGETATION, color=pal.vary(vegetation, 0.04))
        elif draw < 0.37:
            row.add(x, x + width)
        else:
            row.add(
                x, x + width,
                top=float(np.exp(rng.uniform(np.log(6.0), np.log(40.0)))),
                kind=0, label=BUILDING,
                color=pal.sample(_BUILDING_COLORS, 0.05) * 0.9,
                detail_color=pal.sample(_WINDOW_COLORS, 0.05),
                bay=rng.uniform(2.0, 3.5), opening=rng.uniform(0.35, 0.6),
                storey=rng.uniform(2.8, 3.6), window_height=rng.uniform(0.4, 0.6),
            )
        x += width
    return row.build()


def _garden_row(rng: np.random.Generator, pal: _Palette, stop: float, fence: Color,
                vegetation: Color, terrain: Color) -> _Row:
    row = _RowBuilder()
    z = -2.0
    while z < stop:
        length = rng.uniform(5.0, 25.0)
        draw = rng.random()
        if draw < 0.45:
            color = pal.vary(fence, 0.03)
            see_through = rng.random() < 0.6
            gap = 0.45 * color + 0.55 * terrain if see_through else 0.7 * color
            row.add(z, z + length, top=rng.uniform(0.9, 1.8), kind=1, label=FENCE,
                    color=color, detail_color=gap,
                    bay=rng.uniform(0.12, 0.3) if see_through else rng.uniform(0.1, 0.2),
                    opening=rng.uniform(0.5, 0.75) if see_through else 0.12)
        elif draw < 0.75:
            row.add(z, z + length, top=rng.uniform(0.8, 1.7), rough=0.15, kind=2,
                    label=VEGETATION, color=pal.vary(vegetation, 0.04))
        else:
            row.add(z, z + length)
        z += length
    return row.build()


def _sample_street(rng: np.random.Generator, cam: _Camera, pal: _Palette) -> _Street:
    road_width = rng.uniform(6.0, 16.0)
    road_left = -rng.uniform(0.2, 0.8) * road_width
    road = (road_left, road_left + road_width)
    lane_count = max(1, int(round(road_width / rng.uniform(3.0, 3.8))))
    lanes = [road_left + (k + 0.5) * road_width / lane_count for k in range(lane_count)]

    road_color = pal.sample(_ROAD_COLORS, 0.04)
    sidewalk_color = pal.sample(_SIDEWALK_COLORS, 0.05)
    terrain_color = pal.sample(_TERRAIN_COLORS, 0.05)
    vegetation_color = pal.sample(_VEGETATION_COLORS, 0.05)
    fence_color = pal.sample(_FENCE_COLORS, 0.05)

    sun_side = int(rng.choice((-1, 1))) if rng.random() < 0.65 else 0
    far = float(rng.uniform(60.0, 220.0))

    # Per side, outward from the kerb: verge (terrain), sidewalk, garden (terrain), facade.
    sidewalks, facades, garden_lines, garden_rows, side_rows = [], [], [], [], []
    bounds_by_side = []
    for side, kerb in ((-1, road[0]), (1, road[1])):
        verge = 0.0 if rng.random() < 0.65 else rng.uniform(0.8, 3.0)
        walk = rng.uniform(1.5, 5.0)
        garden = 0.0 if rng.random() < 0.5 else rng.uniform(2.0, 8.0)
        inner = kerb + side * verge
        outer = inner + side * walk
        facade = outer + side * garden
        sidewalks.append((inner, outer))
        facades.append(facade)
        garden_lines.append(outer + side * 0.1)
        bounds_by_side.append((kerb, inner, outer, facade))
        light = 1.0 if sun_side == 0 else (0.62 if side == sun_side else 1.1)
        light *= rng.uniform(0.9, 1.1)
        side_rows.append(_facade_row(rng, pal, far, light))
        garden_rows.append(
            _garden_row(rng, pal, far, fence_color, vegetation_color, terrain_color)
            if garden > 0 else None
        )

    (kl, il, ol, fl), (kr, ir, orr, fr) = bounds_by_side
    zone_bounds = np.asarray([fl, ol, il, kl, kr, ir, orr, fr], np.float32)
    zone_label = np.asarray([TERRAIN, TERRAIN, SIDEWALK, TERRAIN, ROAD, TERRAIN, SIDEWALK,
                             TERRAIN, TERRAIN], np.uint8)
    lawn = pal.vary(terrain_color, 0.03) * 0.85
    zone_color = np.stack([
        lawn, pal.vary(terrain_color, 0.03), pal.vary(sidewalk_color, 0.02),
        pal.vary(terrain_color, 0.03), road_color, pal.vary(terrain_color, 0.03),
        pal.vary(sidewalk_color, 0.02), pal.vary(terrain_color, 0.03), lawn,
    ]).astype(np.float32)

    haze = np.asarray((0.75, 0.78, 0.82), np.float32)
    return _Street(
        road=road,
        sidewalks=(sidewalks[0], sidewalks[1]),
        facades=(facades[0], facades[1]),
        far=far,
        lanes=lanes,
        zone_bounds=zone_bounds,
        zone_label=zone_label,
        zone_color=zone_color,
        side_rows=(side_rows[0], side_rows[1]),
        garden_rows=(garden_rows[0], garden_rows[1]),
        garden_lines=(garden_lines[0], garden_lines[1]),
        far_row=_far_row(rng, pal, cam, far, vegetation_color),
        sun_side=sun_side,
        shadow_slope=float(rng.uniform(0.3, 1.2)),
        shadow_skew=float(rng.uniform(-0.8, 0.8)),
        shadow_gain=float(rng.uniform(0.42, 0.7)),
        haze_color=pal.vary(haze, 0.03),
        visibility=float(rng.uniform(150.0, 600.0)),
    )


def _frac(x: np.ndarray) -> np.ndarray:
    """Fractional part, x - floor(x) (several times faster than a float modulo)."""
    return x - np.floor(x)


def _fade(footprint: np.ndarray, size: np.ndarray | float) -> np.ndarray:
    """1 where a pattern of `size` metres is well resolved by pixels of `footprint`
    metres, falling to 0 as it becomes sub-pixel (keeps distant detail from aliasing)."""
    return np.clip(1.5 - footprint / np.maximum(size, 1e-3), 0.0, 1.0)


def _render_row(row: _Row, u: np.ndarray, height: np.ndarray, along: np.ndarray,
                up: np.ndarray, noise: np.ndarray):
    """Rasterise one row of vertical surfaces.

    Args:
        u: (W,) coordinate along the row seen by each column (metres).
        height: (H, W) or (H, 1) world height of each pixel on the row's plane.
        along, up: (W,) pixel footprint along the row and vertically (metres).
        noise: (W,) smooth 1-D noise in [-1, 1] for rough tops.

    Returns: visible (H, W) bool, colour (3, H, W), label (W,) uint8.
    """
    n = len(row.top)
    seg = np.clip(np.searchsorted(row.edges, u, side="right") - 1, 0, n - 1)
    columns = (u >= row.edges[0]) & (u < row.edges[-1]) & (row.top[seg] > 0)
    top = row.top[seg] + row.rough[seg] * noise
    visible = columns & (height >= 0) & (height <= top)

    base = row.color[seg]
    detail = row.detail_color[seg]
    bay = row.bay[seg]
    opening = row.opening[seg]
    phase = _frac((u - row.edges[seg]) / bay)
    kind = row.kind[seg]
    storey = row.storey[seg]
    patterned = kind < 2

    # Windows: centred in each bay, from the first floor up to just below the roof.
    # Bars: gaps between bars, between the bottom rail and the top rail.
    detail_mask = np.zeros(visible.shape, bool)
    if (row.kind == 0).any():
        floor = height / storey
        window_rows = np.abs(_frac(floor) - 0.55) < row.window_height[seg] / 2
        window_rows &= (floor >= 1) & (height < top - 0.6)
        detail_mask |= window_rows & ((np.abs(phase - 0.5) < opening / 2) & (kind == 0))
    if (row.kind == 1).any():
        bar_gaps = (height > 0.12) & (height < top - 0.1)
        detail_mask |= bar_gaps & ((phase < opening) & (kind == 1))

    # Where the pattern is sub-pixel, show its average colour instead.
    resolved = _fade(along, opening * bay)
    resolved = np.where(kind == 0, np.minimum(resolved, _fade(up, storey * 0.5)), resolved)
    share = np.where(kind == 0, opening * row.window_height[seg], opening) * patterned
    mean = base + (detail - base) * share[:, None]
    flat = mean + (base - mean) * resolved[:, None]  # (W, 3)
    step = (detail - flat) * (resolved * patterned)[:, None]  # (W, 3)
    color = flat.T[:, None, :] + detail_mask * step.T[:, None, :]  # (3, H, W)
    if (row.kind == 0).any():  # a darker band under the roof line of buildings
        color *= 1.0 - 0.2 * ((kind == 0) & (height > top - 0.45))
    return visible, color, row.label[seg]


def _composite(image: np.ndarray, label: np.ndarray, depth: np.ndarray, visible: np.ndarray,
               surface_depth: np.ndarray, color: np.ndarray, surface_label: np.ndarray) -> None:
    """Z-buffer one surface into image (3, H, W), label and depth (H, W), in place."""
    take = visible & (surface_depth < depth)
    depth[...] = np.where(take, surface_depth, depth)
    label[...] = np.where(take, surface_label, label)
    image += take * (color - image)  # float blend: much faster than a 3-channel where


def _render_background(rng: np.random.Generator, cam: _Camera, street: _Street,
                       pal: _Palette) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast sky, ground and the vertical rows: image (3, H, W), label, depth (H, W).

    Colours are planar (channel first) here: numpy broadcasts a (H, W) factor over
    a leading channel axis far faster than over a trailing one.
    """
    H, W, f, eye = cam.height, cam.width, cam.focal, cam.eye
    dy = (np.arange(H, dtype=np.float32) + 0.5 - cam.horizon)[:, None]  # (H, 1)
    dx = np.arange(W, dtype=np.float32) + 0.5 - cam.vanish_x  # (W,)
    dx = np.where(np.abs(dx) < 1e-3, 1e-3, dx)
    first_ground = int(np.clip(math.floor(cam.horizon - 0.5) + 1, 0, H))

    image = np.empty((3, H, W), np.float32)
    label = np.empty((H, W), np.uint8)
    depth = np.full((H, W), np.inf, np.float32)

    # Sky: zenith-to-horizon gradient with clouds.
    if first_ground > 0:
        zenith = pal.sample(_SKY_ZENITH, 0.04)[:, None, None]
        horizon_color = np.clip(0.5 * zenith + 0.5 * street.haze_color[:, None, None] + 0.05,
                                0, 1)
        t = np.clip((np.arange(first_ground, dtype=np.float32) + 0.5) / max(cam.horizon, 1.0),
                    0, 1)[:, None] ** 0.7
        sky = zenith + (horizon_color - zenith) * t  # (3, rows, 1)
        scale = H / 128.0
        clouds = _fractal_noise(rng, first_ground, W, [8 * scale, 16 * scale, 32 * scale])
        cover = np.clip((clouds - rng.uniform(-0.5, 1.5)) * rng.uniform(0.3, 0.8), 0, 1)
        cloud_color = pal.vary((0.88, 0.88, 0.9), 0.06)[:, None, None]
        image[:, :first_ground] = sky + cover * (cloud_color - sky)
        label[:first_ground] = SKY

    # Ground: zones by lateral position X, with paint, tiles, kerbs and shadows.
    if first_ground < H:
        gdy = dy[first_ground:]  # (Hg, 1), positive
        Zg = f * eye / gdy  # (Hg, 1)
        Xg = dx[None, :] * (eye / gdy)  # (Hg, W)
        zone = np.zeros(Xg.shape, np.uint8)
        for bound in street.zone_bounds:  # a few comparisons beat searchsorted here
            zone += Xg >= bound
        glabel = np.take(street.zone_label, zone)
        gcolor = np.take(street.zone_color.T, zone, axis=1)  # (3, Hg, W)
        across = Zg / f  # lateral pixel footprint (Hg, 1)
        along = Zg * Zg / (f * eye)  # depth footprint of a row (Hg, 1)

        road_l, road_r = street.road
        on_road = glabel == ROAD
        # Lane markings: the nearest painted line decides solid or dashed; lines thinner
        # than a pixel are drawn one pixel wide at reduced strength.
        paint = np.zeros(Xg.shape, np.float32)
        if rng.random() < 0.85:
            half = rng.uniform(0.06, 0.09)
            dash, duty = rng.uniform(6.0, 12.0), rng.uniform(0.3, 0.6)
            dashed = (_frac(Zg / dash) < duty) * _fade(along, dash * duty)  # (Hg, 1)
            centres = [0.5 * (a + b) for a, b in pairwise(street.lanes)]
            lines = np.asarray([road_l + 0.35, *centres, road_r - 0.35], np.float32)
            solid = np.zeros(len(lines), bool)
            solid[[0, -1]] = True
            nearest = np.searchsorted(0.5 * (lines[1:] + lines[:-1]), Xg)
            hit = np.abs(Xg - lines[nearest]) < np.maximum(half, 0.5 * across)
            strength = np.minimum(1.0, 2 * half / across)  # (Hg, 1)
            paint = hit * np.where(solid[nearest], strength, strength * dashed)
        if rng.random() < 0.15:
            start = rng.uniform(8.0, 30.0)
            stripes = (_frac(Xg - road_l) < 0.5) * _fade(across, 0.5)
            zebra = (Zg > start) & (Zg < start + rng.uniform(3.0, 5.0))
            paint = np.maximum(paint, stripes * zebra)
        paint *= on_road
        paint_color = pal.vary((0.85, 0.85, 0.82), 0.04)[:, None, None]

        # Brightness factors: paving joints, a kerb line, building shadows.
        tile = rng.uniform(0.3, 0.6)
        joints = (_frac(Xg / tile) < 0.1) * _fade(across, tile)
        joints = np.maximum(joints, (_frac(Zg / tile) < 0.1) * _fade(along, tile))
        walk = glabel == SIDEWALK
        shade = 1.0 - 0.15 * (joints * walk)
        kerb_line = walk & (np.minimum(np.abs(Xg - road_l), np.abs(Xg - road_r)) < 0.2)
        shade *= 1.0 + (rng.uniform(0.75, 1.25) - 1.0) * kerb_line

        if street.sun_side:
            side = 0 if street.sun_side < 0 else 1
            facade = street.facades[side]
            row = street.side_rows[side]
            distance = (Xg - facade) * -street.sun_side  # metres in front of the facade
            z_cast = Zg + np.abs(distance) * street.shadow_skew
            seg = np.clip(np.searchsorted(row.edges, z_cast, side="right") - 1, 0, len(row.top) - 1)
            caster = row.top[seg] * (z_cast >= row.edges[0]) * (z_cast < row.edges[-1])
            shaded = (distance >= 0) & (distance < caster * street.shadow_slope)
            shade *= 1.0 + (street.shadow_gain - 1.0) * shaded
        gcolor += 0.9 * paint * (paint_color - gcolor)
        gcolor *= shade

        image[:, first_ground:] = gcolor
        label[first_ground:] = glabel
        depth[first_ground:] = Zg

    rough = np.interp(np.arange(W), np.linspace(0, W, 12), rng.uniform(-1, 1, 12))
    rough = rough.astype(np.float32)

    def rows_between(low: float, high: float) -> slice:
        """Image rows whose offset below the horizon lies in [low, high] (pixels)."""
        first = int(np.clip(math.floor(cam.horizon + low), 0, H))
        return slice(first, int(np.clip(math.ceil(cam.horizon + high) + 1, first, H)))

    # Street sides: planes X = plane, seen by the columns on their side of x0.
    # Each row is rasterised only inside the rows and columns it can reach.
    split = int(np.searchsorted(dx, 0.0))
    for cols, side in ((slice(0, split), 0), (slice(split, W), 1)):
        for row, plane in ((street.side_rows[side], street.facades[side]),
                           (street.garden_rows[side], street.garden_lines[side])):
            if row is None or cols.start >= cols.stop:
                continue
            ratio = plane / dx[cols]  # Z / f, positive on this side
            top = float((row.top + row.rough).max())
            # A pixel is on the row when 0 <= eye - dy * ratio <= top.
            rows = rows_between(float(((eye - top) / ratio).min()), float((eye / ratio).max()))
            if top <= 0 or rows.start >= rows.stop:
                continue
            Z = f * ratio
            visible, color, lab = _render_row(row, Z, eye - dy[rows] * ratio,
                                              Z * Z / (f * abs(plane)), ratio, rough[cols])
            _composite(image[:, rows, cols], label[rows, cols], depth[rows, cols], visible,
                       Z[None, :], color, lab[None, :])

    # The far row across the street: plane Z = far.
    far = street.far
    top = float((street.far_row.top + street.far_row.rough).max())
    rows = rows_between((eye - top) * f / far, eye * f / far)
    if rows.start < rows.stop:
        foot = np.full(W, far / f, np.float32)
        visible, color, lab = _render_row(street.far_row, dx * (far / f),
                                          eye - dy[rows] * (far / f), foot, foot, rough)
        _composite(image[:, rows], label[rows], depth[rows], visible, np.float32(far), color,
                   lab[None, :])

    # Aerial perspective: distant surfaces fade towards the haze colour.
    finite = np.isfinite(depth)
    haze = (1.0 - np.exp(-np.where(finite, depth, 0.0) / street.visibility)) * finite
    image += haze * (street.haze_color[:, None, None] - image)
    return image, label, depth


# --------------------------------------------------------------------------- #
# Objects: drawn far to near with cv2 polygons into the image and the label.
# --------------------------------------------------------------------------- #


class _Canvas:
    """Image (H, W, 3) float32 and label (H, W) uint8, filled polygon by polygon."""

    def __init__(self, image: np.ndarray, label: np.ndarray) -> None:
        self.image = image
        self.label = label

    def fill(self, polygons: Sequence[np.ndarray], color: np.ndarray, label: int | None) -> None:
        # Pixel centres sit at half-integers in our coordinates, at integers in cv2's;
        # 4 fractional bits keep thin shapes where they belong.
        # One call per polygon: a single fillPoly call leaves overlaps of its polygons empty.
        # Objects stand at least a metre away, so coordinates stay far inside int32.
        rgb = np.asarray(color, np.float64).tolist()
        for polygon in polygons:
            points = np.rint(polygon * 16.0 - 8.0).astype(np.int32)
            cv2.fillPoly(self.image, [points], rgb, cv2.LINE_8, 4)
            if label is not None:
                cv2.fillPoly(self.label, [points], int(label), cv2.LINE_8, 4)


def _quad(cam: _Camera, corners: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """Projected polygon (N, 2) of world corners (plain floats: cheaper than numpy here)."""
    return np.asarray([cam.point(X, Y, Z) for X, Y, Z in corners])


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.asarray([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, count: int = 12) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=-1)


_BLOB_ANGLE = np.linspace(0, 2 * np.pi, 32, endpoint=False)
_BLOB_HARMONIC = np.arange(2, 9, dtype=np.float64)[:, None]  # (7, 1)
_BLOB_COS_SIN = np.stack([np.cos(_BLOB_ANGLE), np.sin(_BLOB_ANGLE)], -1)  # (32, 2)


def _blobs(rng: np.random.Generator, ellipses: np.ndarray) -> np.ndarray:
    """Irregular closed outlines (N, 32, 2) around ellipses (N, 4) = (cx, cy, rx, ry):
    each radius is perturbed by random harmonics 2..8."""
    draws = rng.random((2, len(ellipses), 7, 1))
    amp = 0.22 * draws[0] / _BLOB_HARMONIC ** 0.7
    wave = np.sin(_BLOB_HARMONIC * _BLOB_ANGLE + 2 * np.pi * draws[1])  # (N, 7, 32)
    radius = 1.0 + (amp * wave).sum(1)  # (N, 32)
    return (radius[..., None] * _BLOB_COS_SIN * ellipses[:, None, 2:]) + ellipses[:, None, :2]


@dataclass
class _Object:
    depth: float  # nearest depth, for far-to-near drawing
    kind: str
    X: float
    Z: float
    params: dict


_WHEEL_RIM = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)]


def _draw_car(canvas: _Canvas, cam: _Camera, obj: _Object, fade) -> None:
    p = obj.params
    X, z0 = obj.X, obj.Z
    w, length, body, roof = p["width"], p["length"], p["body"], p["roof"]
    x0, x1, z1 = X - w / 2, X + w / 2, z0 + length
    paint = fade(p["color"], z0)
    dark = fade(p["tyre"], z0)
    glass = fade(p["glass"], z0)
    side = x0 if x0 > 0 else (x1 if x1 < 0 else None)

    if w * cam.focal / z0 < 8.0:
        # Under 8 pixels wide the details are sub-pixel: draw the silhouette only.
        if side is not None:
            canvas.fill([_quad(cam, [(side, 0.05, z0), (side, 0.05, z1), (side, body, z1),
                                     (side, body, z0)])], paint * 0.85, CAR)
        canvas.fill([_quad(cam, [(x0, 0.05, z0), (x1, 0.05, z0), (x1, body, z0), (x0, body, z0),
                                 ])], paint, CAR)
        canvas.fill([_quad(cam, [(x0 + 0.1, body, z0 + 0.5), (x1 - 0.1, body, z0 + 0.5),
                                 (x1 - 0.25, roof, z0 + 1.0), (x0 + 0.25, roof, z0 + 1.0)])],
                    glass, CAR)
        return

    if side is not None:
        canvas.fill([_quad(cam, [(side, 0.05, z0), (side, 0.05, z1), (side, 0.35, z1),
                                 (side, 0.35, z0)])], dark, CAR)
        canvas.fill([_quad(cam, [(side, 0.3, z0), (side, 0.3, z1), (side, body, z1),
                                 (side, body, z0)])], paint * 0.85, CAR)
        wheels = []
        for zc in (z0 + 0.8, z1 - 0.85):
            ring = [(side, 0.33 + 0.33 * sin, zc + 0.33 * cos) for cos, sin in _WHEEL_RIM]
            wheels.append(_quad(cam, ring))
        canvas.fill(wheels, dark, CAR)
    # Top of the body (bonnet / boot lid) is visible from above.
    if body < cam.eye:
        canvas.fill([_quad(cam, [(x0, body, z0), (x1, body, z0), (x1, body, z1),
                                 (x0, body, z1)])], paint * 1.08, CAR)
    canvas.fill([_quad(cam, [(x0, 0.05, z0), (x1, 0.05, z0), (x1, 0.32, z0),
                             (x0, 0.32, z0)])], dark, CAR)
    canvas.fill([_quad(cam, [(x0, 0.3, z0), (x1, 0.3, z0), (x1, body, z0), (x0, body, z0)])],
                paint, CAR)
    lamps = [_quad(cam, [(a, body - 0.25, z0), (b, body - 0.25, z0), (b, body - 0.1, z0),
                         (a, body - 0.1, z0)]) for a, b in ((x0 + 0.08, x0 + 0.35),
                                                            (x1 - 0.35, x1 - 0.08))]
    canvas.fill(lamps, fade(p["lamp"], z0), CAR)
    canvas.fill([_quad(cam, [(X - 0.26, 0.42, z0), (X + 0.26, 0.42, z0), (X + 0.26, 0.55, z0),
                             (X - 0.26, 0.55, z0)])], fade((0.85, 0.85, 0.8), z0), CAR)

    # Cabin: a frustum from the body top to the roof; glass inset in its faces.
    bx0, bx1, bz0, bz1 = x0 + 0.08, x1 - 0.08, z0 + p["rear"], z1 - p["front"]
    tx0, tx1, tz0, tz1 = x0 + 0.22, x1 - 0.22, bz0 + 0.6, bz1 - 0.8
    if side is not None:
        cs, ts = (bx0, tx0) if side == x0 else (bx1, tx1)
        canvas.fill([_quad(cam, [(cs, body, bz0), (cs, body, bz1), (ts, roof, tz1),
                                 (ts, roof, tz0)])], paint * 0.85, CAR)
        canvas.fill([_quad(cam, [(cs, body + 0.06, bz0 + 0.25), (cs, body + 0.06, bz1 - 0.2),
                                 (ts, roof - 0.05, tz1 - 0.05), (ts, roof - 0.05, tz0 + 0.1)])],
                    glass, CAR)
    canvas.fill([_quad(cam, [(bx0, body, bz0), (bx1, body, bz0), (tx1, roof, tz0),
                             (tx0, roof, tz0)])], paint, CAR)
    canvas.fill([_quad(cam, [(bx0 + 0.1, body + 0.06, bz0 + 0.06), (bx1 - 0.1, body + 0.06,
                                                                    bz0 + 0.06),
                             (tx1 - 0.05, roof - 0.05, tz0 - 0.04),
                             (tx0 + 0.05, roof - 0.05, tz0 - 0.04)])], glass, CAR)
    if roof < cam.eye:
        canvas.fill([_quad(cam, [(tx0, roof, tz0), (tx1, roof, tz0), (tx1, roof, tz1),
                                 (tx0, roof, tz1)])], paint * 1.1, CAR)


def _draw_person(canvas: _Canvas, cam: _Camera, obj: _Object, fade) -> None:
    p = obj.params
    foot_x, foot_y = cam.point(obj.X, 0.0, obj.Z)
    s = cam.focal / obj.Z * p["height"]  # pixels per body height

    def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return _rect(foot_x + s * x0, foot_y - s * y0, foot_x + s * x1, foot_y - s * y1)

    stride = p["stride"]
    legs = fade(p["legs"], obj.Z)
    shirt = fade(p["shirt"], obj.Z)
    canvas.fill([
        np.asarray([[foot_x + s * (-stride - 0.05), foot_y],
                    [foot_x + s * (-stride + 0.03), foot_y],
                    [foot_x + s * 0.02, foot_y - s * 0.48],
                    [foot_x - s * 0.07, foot_y - s * 0.48]]),
        np.asarray([[foot_x + s * (stride - 0.03), foot_y],
                    [foot_x + s * (stride + 0.05), foot_y],
                    [foot_x + s * 0.07, foot_y - s * 0.48],
                    [foot_x - s * 0.02, foot_y - s * 0.48]]),
    ], legs, PERSON)
    half = p["shoulders"]
    canvas.fill([np.asarray([[foot_x - s * 0.08, foot_y - s * 0.46],
                             [foot_x + s * 0.08, foot_y - s * 0.46],
                             [foot_x + s * half, foot_y - s * 0.81],
                             [foot_x - s * half, foot_y - s * 0.81]])], shirt, PERSON)
    swing = p["swing"]
    canvas.fill([box(-half - 0.04 + swing, 0.42, -half + 0.02, 0.8),
                 box(half - 0.02, 0.42, half + 0.04 - swing, 0.8)], shirt * 0.9, PERSON)
    canvas.fill([_ellipse(foot_x, foot_y - s * 0.905, s * 0.055, s * 0.07, 10)],
                fade(p["skin"], obj.Z), PERSON)
    canvas.fill([_ellipse(foot_x, foot_y - s * 0.94, s * 0.058, s * 0.045, 8)],
                fade(p["hair"], obj.Z), PERSON)
    if p["bag"] is not None:
        canvas.fill([box(half - 0.02, 0.45, half + 0.1, 0.62)], fade(p["bag"], obj.Z), PERSON)


def _draw_pole(canvas: _Canvas, cam: _Camera, obj: _Object, fade) -> None:
    p = obj.params
    X, Z = obj.X, obj.Z
    foot = cam.point(X, 0.0, Z)
    top = cam.point(X, p["height"], Z)
    half = max(0.5, p["radius"] * cam.focal / Z)  # at least one pixel wide
    color = fade(p["color"], Z)
    shapes = [_rect(foot[0] - half, top[1], foot[0] + half, foot[1])]
    if p["arm"]:
        # A lamp arm reaching over the road, ending in a lamp head.
        reach = p["arm"]
        end_x, end_y = cam.point(X + reach, p["height"] + 0.3, Z)
        thick = max(0.5, 0.06 * cam.focal / Z)
        shapes.append(np.asarray([[top[0], top[1] - thick], [end_x, end_y - thick],
                                  [end_x, end_y + thick], [top[0], top[1] + thick]]))
        lamp = 0.25 * cam.focal / Z
        shapes.append(_rect(end_x - 1.6 * lamp, end_y, end_x + 1.6 * lamp, end_y + lamp))
    canvas.fill(shapes, color, POLE)
    for sign in p["signs"]:
        cx, cy = cam.point(X, sign["height"], Z)
        r = sign["size"] * cam.focal / Z / 2
        shape = sign["shape"]
        if shape == "circle":
            outline = _ellipse(cx, cy, r, r, 14)
        elif shape == "triangle":
            flip = -1 if sign["flip"] else 1
            outline = np.asarray([[cx - r, cy + flip * 0.8 * r], [cx + r, cy + flip * 0.8 * r],
                                  [cx, cy - flip * r]])
        elif shape == "diamond":
            outline = np.asarray([[cx - r, cy], [cx, cy - r], [cx + r, cy], [cx, cy + r]])
        else:
            outline = _rect(cx - r * sign["aspect"], cy - r, cx + r * sign["aspect"], cy + r)
        if sign["back"]:
            canvas.fill([outline], fade(_SIGN_BACK, Z), SIGN)
        else:
            centre = np.asarray([cx, cy])
            canvas.fill([outline], fade(sign["rim"], Z), SIGN)
            canvas.fill([centre + 0.7 * (outline - centre)], fade(sign["face"], Z), SIGN)


def _draw_plant(canvas: _Canvas, cam: _Camera, obj: _Object, fade, rng) -> None:
    p = obj.params
    X, Z = obj.X, obj.Z
    scale = cam.focal / Z
    foot_x, foot_y = cam.point(X, 0.0, Z)
    color = fade(p["color"], Z)
    if p["trunk"] > 0:
        half = max(0.5, p["trunk"] * scale / 2)
        top_y = foot_y - p["crown_y"] * scale
        canvas.fill([_rect(foot_x - half, top_y, foot_x + half, foot_y)],
                    fade(p["trunk_color"], Z), VEGETATION)
    cx, cy = foot_x, foot_y - p["crown_y"] * scale
    rx, ry = p["crown_rx"] * scale, p["crown_ry"] * scale
    # A crown, side lobes around it, and a lighter sunlit lobe on top (same class).
    lobes = p["lobes"]
    draws = rng.random((lobes, 3))
    angle = 2 * np.pi * draws[:, 0]
    ellipses = np.empty((lobes + 2, 4))
    ellipses[0] = (cx, cy, rx, ry)
    ellipses[1:-1, 0] = cx + 0.55 * rx * np.cos(angle)
    ellipses[1:-1, 1] = cy + 0.5 * ry * np.sin(angle)
    ellipses[1:-1, 2] = rx * (0.45 + 0.3 * draws[:, 1])
    ellipses[1:-1, 3] = ry * (0.45 + 0.3 * draws[:, 2])
    ellipses[-1] = (cx - 0.2 * rx, cy - 0.35 * ry, 0.55 * rx, 0.45 * ry)
    outlines = _blobs(rng, ellipses)
    outlines[..., 1] = np.minimum(outlines[..., 1], foot_y)  # bushes sit on the ground
    canvas.fill(list(outlines[:-1]), color, VEGETATION)
    canvas.fill([outlines[-1]], color * 1.15, VEGETATION)


def _draw_clutter(canvas: _Canvas, cam: _Camera, obj: _Object, fade) -> None:
    p = obj.params
    X, Z = obj.X, obj.Z
    w, h = p["width"], p["height"]
    color = fade(p["color"], Z)
    canvas.fill([_quad(cam, [(X - w / 2, 0.0, Z), (X + w / 2, 0.0, Z), (X + w / 2, h, Z),
                             (X - w / 2, h, Z)])], color, IGNORE_INDEX)
    canvas.fill([_quad(cam, [(X - w / 2 - 0.05, h - 0.1, Z), (X + w / 2 + 0.05, h - 0.1, Z),
                             (X + w / 2 + 0.05, h, Z), (X - w / 2 - 0.05, h, Z)])],
                color * 0.7, IGNORE_INDEX)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(max(high, low * 1.01)))))


def _sample_objects(rng: np.random.Generator, cam: _Camera, street: _Street,
                    pal: _Palette) -> list[_Object]:
    near = cam.ground_depth(cam.height)  # depth of the ground at the bottom edge
    far = min(0.75 * street.far, 80.0)
    objects: list[_Object] = []
    road_l, road_r = street.road
    vegetation_color = pal.sample(_VEGETATION_COLORS, 0.05)
    pole_color = pal.sample(_POLE_COLORS, 0.05)

    def car(X: float, Z: float, facing_away: bool) -> _Object:
        length = rng.uniform(3.8, 5.0)
        body = rng.uniform(0.75, 1.0)
        lamp = (0.75, 0.1, 0.08) if facing_away else (0.92, 0.9, 0.75)
        return _Object(Z, "car", X, Z, {
            "width": rng.uniform(1.7, 1.95), "length": length, "body": body,
            "roof": body + rng.uniform(0.45, 0.8), "rear": rng.uniform(0.2, 0.9),
            "front": rng.uniform(0.7, 1.3),
            "color": pal.sample(_CAR_COLORS, 0.04), "tyre": pal.vary((0.06, 0.06, 0.07), 0.02),
            "glass": pal.sample(_WINDOW_COLORS, 0.04) * 0.8, "lamp": np.asarray(lamp),
        })

    # Parked rows along the kerbs, then moving cars in the remaining lanes.
    parked_lanes = set()
    for side, kerb in ((-1, road_l), (1, road_r)):
        if rng.random() < 0.55:
            X = kerb - side * rng.uniform(1.0, 1.3)
            parked_lanes.add(min(range(len(street.lanes)),
                                 key=lambda k, X=X: abs(street.lanes[k] - X)))
            z = 0.6 * near + rng.uniform(0.0, 6.0)
            while z < far:
                if rng.random() < 0.8:
                    obj = car(X + rng.uniform(-0.15, 0.15), z, rng.random() < 0.7)
                    objects.append(obj)
                    z += obj.params["length"]
                z += rng.uniform(0.6, 7.0)
    for k, lane in enumerate(street.lanes):
        if k in parked_lanes and len(street.lanes) > 1:
            continue
        own_lane = abs(lane) < 1.8
        z = max(near, 7.0 if own_lane else 0.8 * near) + _log_uniform(rng, 0.5, 40.0)
        while z < far and rng.random() < 0.75:
            obj = car(lane + rng.uniform(-0.3, 0.3), z, lane >= road_l + 0.5 * (road_r - road_l)
                      or rng.random() < 0.5)
            objects.append(obj)
            z += obj.params["length"] + _log_uniform(rng, 2.0, 40.0)

    # People on the sidewalks, a few on the road.
    for _ in range(int(rng.poisson(4.0))):
        inner, outer = street.sidewalks[int(rng.integers(2))]
        X = rng.uniform(min(inner, outer) + 0.3, max(inner, outer) - 0.3)
        if rng.random() < 0.12:
            X = rng.uniform(road_l + 0.5, road_r - 0.5)
        Z = _log_uniform(rng, 0.8 * near, far)
        group = 1 + int(rng.random() < 0.3) * int(rng.integers(1, 3))
        for member in range(group):
            objects.append(_Object(Z, "person", X + 0.6 * member, Z + rng.uniform(-0.4, 0.4), {
                "height": rng.uniform(1.1, 1.4) if rng.random() < 0.1 else rng.uniform(1.55, 1.95),
                "stride": rng.uniform(0.0, 0.12), "shoulders": rng.uniform(0.1, 0.14),
                "swing": rng.uniform(-0.03, 0.05),
                "legs": pal.sample(_CLOTHES_COLORS, 0.04),
                "shirt": pal.sample(_CLOTHES_COLORS, 0.04),
                "skin": pal.sample(_SKIN_COLORS, 0.03), "hair": pal.vary((0.15, 0.11, 0.08), 0.05),
                "bag": pal.sample(_CLOTHES_COLORS, 0.04) if rng.random() < 0.3 else None,
            }))

    # Lamp posts and sign posts near the kerbs.
    for side, (inner, _) in ((-1, street.sidewalks[0]), (1, street.sidewalks[1])):
        if rng.random() < 0.15:
            continue
        spacing = rng.uniform(10.0, 28.0)
        z = 0.7 * near + rng.uniform(0.0, spacing)
        while z < far:
            lamp = rng.random() < 0.4
            signs = []
            if not lamp or rng.random() < 0.2:
                for level in range(1 + int(rng.random() < 0.3)):
                    rim, face = _SIGN_FACES[int(rng.integers(len(_SIGN_FACES)))]
                    signs.append({
                        "height": rng.uniform(2.0, 2.8) + 0.75 * level,
                        "size": rng.uniform(0.5, 0.8),
                        "shape": ("circle", "triangle", "rect", "diamond")[int(rng.integers(4))],
                        "flip": rng.random() < 0.3, "aspect": rng.uniform(0.7, 1.6),
                        "back": rng.random() < 0.25,
                        "rim": pal.vary(rim, 0.04), "face": pal.vary(face, 0.04),
                    })
            height = rng.uniform(6.0, 9.5) if lamp else rng.uniform(2.6, 3.6) + 0.75 * len(signs)
            X = inner + side * rng.uniform(0.3, 0.7)
            objects.append(_Object(z, "pole", X, z, {
                "height": height, "radius": rng.uniform(0.05, 0.11),
                "color": pal.vary(pole_color, 0.03),
                "arm": -side * rng.uniform(1.0, 2.2) if lamp else 0.0, "signs": signs,
            }))
            z += spacing * rng.uniform(0.7, 1.3)

    # Trees along the kerb or in gardens, bushes against the facades.
    for side in (0, 1):
        sign = -1 if side == 0 else 1
        inner, outer = street.sidewalks[side]
        if rng.random() < 0.5:
            X = inner + sign * rng.uniform(0.6, 1.2)
            spacing = rng.uniform(7.0, 16.0)
            z = 0.7 * near + rng.uniform(0.0, spacing)
            while z < far:
                crown = rng.uniform(1.3, 3.0)
                objects.append(_Object(z, "plant", X + rng.uniform(-0.2, 0.2), z, {
                    "trunk": rng.uniform(0.2, 0.4), "trunk_color": pal.vary(_TRUNK_COLOR, 0.05),
                    "crown_y": rng.uniform(2.5, 4.0) + crown, "crown_rx": crown,
                    "crown_ry": crown * rng.uniform(0.9, 1.4), "lobes": int(rng.integers(2, 5)),
                    "color": pal.vary(vegetation_color, 0.04),
                }))
                z += spacing * rng.uniform(0.8, 1.2)
        for _ in range(int(rng.poisson(1.5))):
            facade = street.facades[side]
            X = facade - sign * rng.uniform(0.5, 1.2)
            Z = _log_uniform(rng, near, far)
            size = rng.uniform(0.5, 1.3)
            objects.append(_Object(Z, "plant", X, Z, {
                "trunk": 0.0, "crown_y": size * 0.8, "crown_rx": size * rng.uniform(1.0, 1.8),
                "crown_ry": size, "lobes": int(rng.integers(1, 4)),
                "color": pal.vary(vegetation_color, 0.05),
            }))

    # Rare unlabelled clutter on the sidewalks: bins, crates, boards.
    for _ in range(int(rng.random() < 0.25) * int(rng.integers(1, 3))):
        inner, outer = street.sidewalks[int(rng.integers(2))]
        Z = _log_uniform(rng, near, far)
        objects.append(_Object(Z, "clutter", rng.uniform(min(inner, outer), max(inner, outer)), Z,
                               {"width": rng.uniform(0.5, 1.2), "height": rng.uniform(0.6, 1.3),
                                "color": pal.sample(_CLUTTER_COLORS, 0.05)}))
    return objects


def _draw_car_shadows(shade: np.ndarray, cam: _Camera, cars: Sequence[_Object]) -> None:
    polygons = []
    for obj in cars:
        p = obj.params
        x0, x1 = obj.X - p["width"] / 2 - 0.15, obj.X + p["width"] / 2 + 0.15
        z0, z1 = obj.Z - 0.25, obj.Z + p["length"]
        polygons.append(_quad(cam, [(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)]))
    if polygons:
        points = [np.rint(q * 16.0 - 8.0).astype(np.int32) for q in polygons]
        cv2.fillPoly(shade, points, 0.45, cv2.LINE_8, 4)


def _draw_hood(canvas: _Canvas, rng: np.random.Generator, pal: _Palette, cam: _Camera) -> None:
    """The ego vehicle's bonnet: a dark curved band at the bottom, labelled 255."""
    H, W = cam.height, cam.width
    rise = rng.uniform(0.06, 0.2) * H
    bulge = rng.uniform(0.2, 0.6)
    centre = rng.uniform(0.35, 0.65) * W
    x = np.linspace(-1, W + 1, 24)
    top = H - rise * (1 - bulge * ((x - centre) / W * 2) ** 2)
    outline = np.concatenate([np.stack([x, top], -1), [[W + 1, H + 1], [-1, H + 1]]])
    color = pal.vary(pal.pick(((0.05, 0.05, 0.06), (0.15, 0.15, 0.17), (0.25, 0.1, 0.1),
                               (0.1, 0.14, 0.22), (0.35, 0.36, 0.38))), 0.03)
    canvas.fill([outline], color, IGNORE_INDEX)
    # A sky reflection along the bonnet's front edge.
    glint = np.concatenate([np.stack([x, top + 0.5], -1),
                            np.stack([x[::-1], top[::-1] + rise * rng.uniform(0.15, 0.35)], -1)])
    canvas.fill([glint], np.clip(color + rng.uniform(0.08, 0.25), 0, 1), None)


def render_street_scene(rng: np.random.Generator, height: int, width: int, *,
                        noise_std: float = 0.03, blur_sigma: float = 0.7,
                        color_jitter: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene from `rng`.

    Returns image (H, W, 3) uint8 RGB and mask (H, W) uint8 of Cityscapes train ids
    (``PRESENT_TRAIN_IDS``) or ``IGNORE_INDEX``. The same generator state gives the
    same arrays.
    """
    pal = _Palette(rng, color_jitter)
    cam = _sample_camera(rng, height, width)
    street = _sample_street(rng, cam, pal)
    planes, label, _ = _render_background(rng, cam, street, pal)

    objects = _sample_objects(rng, cam, street, pal)
    shade = np.ones((height, width), np.float32)
    _draw_car_shadows(shade, cam, [o for o in objects if o.kind == "car"])
    ground = (label == ROAD) | (label == SIDEWALK) | (label == TERRAIN)
    planes *= 1.0 + (shade - 1.0) * ground

    haze, visibility = street.haze_color, street.visibility

    def fade(color: Sequence[float] | np.ndarray, depth: float) -> np.ndarray:
        weight = 1.0 - math.exp(-depth / visibility)
        return np.asarray(color, np.float32) * (1 - weight) + haze * weight

    # cv2 draws into interleaved (H, W, 3) images.
    canvas = _Canvas(cv2.merge(list(planes)), label)
    for obj in sorted(objects, key=lambda o: -o.depth):
        if obj.kind == "car":
            _draw_car(canvas, cam, obj, fade)
        elif obj.kind == "person":
            _draw_person(canvas, cam, obj, fade)
        elif obj.kind == "pole":
            _draw_pole(canvas, cam, obj, fade)
        elif obj.kind == "plant":
            _draw_plant(canvas, cam, obj, fade, rng)
        else:
            _draw_clutter(canvas, cam, obj, fade)
    if rng.random() < 0.7:
        _draw_hood(canvas, rng, pal, cam)

    # Texture: grain and a brightness/hue drift with per-class strength; leaves for
    # vegetation. Illumination: exposure, colour cast, a linear gradient, vignetting.
    # Everything multiplies, so it is gathered into one factor per pixel.
    scale = height / 128.0
    grain = _fractal_noise(rng, height, width, [1.0, 2.0 * scale, 4.0 * scale])
    drift = [_fractal_noise(rng, height, width, [16.0 * scale, 48.0 * scale]) for _ in range(4)]
    coarse = cv2.LUT(label, _COARSE)
    light = 1.0 + cv2.LUT(label, _FINE) * grain + coarse * drift[0]
    # Vegetation has no plain grain (_FINE is 0): the same field, stronger, makes leaves.
    light *= 1.0 + (np.clip(0.9 + 0.35 * grain, 0.15, 1.6) - 1.0) * (label == VEGETATION)

    j = color_jitter
    gain = math.exp(j * rng.uniform(-0.45, 0.3))
    cast = 1.0 + j * 0.03 * rng.standard_normal(3)
    theta = rng.uniform(0, 2 * np.pi)
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width - 0.5
    ramp = 1.0 + j * rng.uniform(0.0, 0.35) * (math.cos(theta) * xs + math.sin(theta) * ys)
    vignette = 1.0 - j * rng.uniform(0.0, 0.35) * (xs * xs + ys * ys)
    light *= gain * ramp * vignette
    coarse *= 0.3

    # Per channel: light, hue drift, optical blur, sensor noise, quantisation.
    channels = []
    for c, plane in enumerate(cv2.split(canvas.image)):
        plane *= light * (1.0 + coarse * drift[1 + c]) * float(cast[c])
        if blur_sigma > 0:
            plane = cv2.GaussianBlur(plane, (0, 0), blur_sigma)
        if noise_std > 0:
            plane += noise_std * _gaussian_bytes(rng, height, width)
        channels.append(np.clip(plane * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return cv2.merge(channels), label


def render_grid(n: int, path: str, *, split: str = "val", height: int = 128, width: int = 256,
                seed: int = 0) -> np.ndarray:
    """Write a PNG of the first `n` samples of a split: image beside its coloured mask.

    Ignored pixels (255) are shown white. Returns the grid (rows, cols, 3) uint8.
    """
    from PIL import Image

    dataset = SyntheticCity(split, height, width, lengths={split: max(n, 1)}, seed=seed)
    rows = []
    for index in range(n):
        image, mask = dataset.load(index)
        colours = colorize(mask)
        colours[mask == IGNORE_INDEX] = 255
        gap = np.full((height, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, gap, colours], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    Image.fromarray(grid).save(path)
    return grid


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Render synthetic_city samples to a PNG grid.")
    parser.add_argument("path", nargs="?", default="synthetic_city.png")
    parser.add_argument("-n", type=int, default=6)
    parser.add_argument("--split", default="val")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    render_grid(args.n, args.path, split=args.split, height=args.height, width=args.width,
                seed=args.seed)
    print(f"wrote {args.path}")
