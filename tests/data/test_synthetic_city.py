"""Tests for the procedural ``synthetic_city`` dataset.

Samples are 64x128 (a few milliseconds each) and shared through module fixtures.
"""

from __future__ import annotations

import numpy as np
import pytest

from cheeger.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, TRAIN_ID
from cheeger.data.synthetic_city import PRESENT_TRAIN_IDS, SyntheticCity, render_grid

HEIGHT, WIDTH = 64, 128
N_SAMPLES = 32


@pytest.fixture(scope="module")
def dataset() -> SyntheticCity:
    return SyntheticCity("train", HEIGHT, WIDTH, lengths={"train": N_SAMPLES})


@pytest.fixture(scope="module")
def samples(dataset: SyntheticCity) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) and masks (N, H, W) of the first N_SAMPLES train samples."""
    pairs = [dataset.load(i) for i in range(N_SAMPLES)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# --------------------------------------------------------------------------- #
# Determinism and split separation
# --------------------------------------------------------------------------- #


def test_same_index_gives_identical_arrays(dataset: SyntheticCity) -> None:
    first, second = dataset.load(5), dataset.load(5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_same_seed_in_another_object_gives_identical_arrays(dataset: SyntheticCity) -> None:
    other = SyntheticCity("train", HEIGHT, WIDTH, seed=0)
    for index in (0, 7):
        np.testing.assert_array_equal(dataset.load(index)[0], other.load(index)[0])
        np.testing.assert_array_equal(dataset.load(index)[1], other.load(index)[1])


def test_cache_returns_the_generated_arrays_and_protects_them(dataset: SyntheticCity) -> None:
    cached = SyntheticCity("train", HEIGHT, WIDTH, lengths={"train": N_SAMPLES}, cache=True)
    image, mask = cached.load(3)
    image[:] = 0  # a caller writing into its sample must not change the cache
    mask[:] = 0
    for _ in range(2):
        again = cached.load(3)
        np.testing.assert_array_equal(again[0], dataset.load(3)[0])
        np.testing.assert_array_equal(again[1], dataset.load(3)[1])
    assert list(cached._cache) == [3]


def test_different_seed_gives_different_samples(dataset: SyntheticCity) -> None:
    other = SyntheticCity("train", HEIGHT, WIDTH, seed=1)
    assert not np.array_equal(dataset.load(0)[1], other.load(0)[1])
    assert not np.array_equal(dataset.load(0)[0], other.load(0)[0])


def test_consecutive_indices_differ(samples: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks = samples
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(images[0], images[1])


def test_splits_give_different_samples() -> None:
    splits = ("train", "val", "test")
    loaded = {split: SyntheticCity(split, HEIGHT, WIDTH).load(0) for split in splits}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not np.array_equal(loaded[a][1], loaded[b][1]), (a, b)


def test_lengths_never_change_content() -> None:
    short = SyntheticCity("val", HEIGHT, WIDTH, lengths={"val": 4, "train": 10})
    default = SyntheticCity("val", HEIGHT, WIDTH)
    np.testing.assert_array_equal(short.load(3)[0], default.load(3)[0])
    np.testing.assert_array_equal(short.load(3)[1], default.load(3)[1])


def test_difficulty_knobs_change_appearance_not_labels() -> None:
    hard = SyntheticCity("val", HEIGHT, WIDTH)
    easy = SyntheticCity("val", HEIGHT, WIDTH, noise_std=0.0, blur_sigma=0.0, color_jitter=0.0)
    for index in (0, 1, 2):
        hard_image, hard_mask = hard.load(index)
        easy_image, easy_mask = easy.load(index)
        np.testing.assert_array_equal(hard_mask, easy_mask)
        assert not np.array_equal(hard_image, easy_image)


# --------------------------------------------------------------------------- #
# Shapes, dtypes and the label space
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("height", "width"), [(32, 64), (64, 64), (96, 40), (512, 1024)])
def test_shapes_and_dtypes(height: int, width: int) -> None:
    image, mask = SyntheticCity("test", height, width).load(0)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert mask.shape == (height, width) and mask.dtype == np.uint8


def test_class_metadata() -> None:
    assert SyntheticCity.classes == CITYSCAPES_CLASSES
    assert SyntheticCity.present_train_ids == PRESENT_TRAIN_IDS
    assert set(PRESENT_TRAIN_IDS) <= {c.train_id for c in CITYSCAPES_CLASSES}
    assert len(PRESENT_TRAIN_IDS) >= 10
    for name in ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "terrain",
                 "sky", "person", "car"):
        assert TRAIN_ID[name] in PRESENT_TRAIN_IDS, name


def test_labels_are_present_ids_or_ignore(samples: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = samples
    assert set(np.unique(masks)) <= set(PRESENT_TRAIN_IDS) | {IGNORE_INDEX}


def test_every_present_class_has_a_real_pixel_share(samples: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = samples
    share = np.bincount(masks.ravel(), minlength=256) / masks.size
    for train_id in PRESENT_TRAIN_IDS:
        assert share[train_id] > 1e-3, (CITYSCAPES_CLASSES[train_id].name, share[train_id])
    # The big stuff classes dominate, as in real street scenes.
    assert share[TRAIN_ID["road"]] > 0.1 and share[TRAIN_ID["building"]] > 0.1


def test_ignored_hood_in_most_but_not_all_images(samples: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = samples
    with_ignore = (masks == IGNORE_INDEX).any(axis=(1, 2))
    assert 0.4 < with_ignore.mean() < 1.0
    # The hood is a band at the bottom: where 255 is present, the bottom-centre pixel is 255
    # unless only clutter was drawn.
    bottom = masks[:, -1, WIDTH // 2] == IGNORE_INDEX
    assert bottom.sum() >= 0.8 * with_ignore.sum()


# --------------------------------------------------------------------------- #
# The data is not colour-trivial
# --------------------------------------------------------------------------- #


def _pixels(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    colours = images.reshape(-1, 3).astype(np.float64) / 255.0
    labels = masks.ravel()
    keep = labels != IGNORE_INDEX
    return colours[keep], labels[keep]


def _fit_quadratic_discriminant(colours: np.ndarray, labels: np.ndarray):
    """Per-class Gaussian on RGB with class priors; returns a predict function."""
    classes = np.unique(labels)
    params = []
    for c in classes:
        x = colours[labels == c]
        covariance = np.cov(x.T) + 1e-6 * np.eye(3)
        params.append((x.mean(0), np.linalg.inv(covariance),
                       np.linalg.slogdet(covariance)[1], np.log(len(x) / len(colours))))

    def predict(query: np.ndarray) -> np.ndarray:
        scores = np.stack([
            -0.5 * np.einsum("ni,ij,nj->n", query - mean, precision, query - mean)
            - 0.5 * logdet + log_prior
            for mean, precision, logdet, log_prior in params
        ], axis=1)
        return classes[scores.argmax(1)]

    return predict


def test_per_pixel_colour_classifiers_are_far_from_perfect(
    samples: tuple[np.ndarray, np.ndarray],
) -> None:
    images, masks = samples
    half = N_SAMPLES // 2
    train_x, train_y = _pixels(images[:half], masks[:half])
    test_x, test_y = _pixels(images[half:], masks[half:])

    quadratic = _fit_quadratic_discriminant(train_x, train_y)
    assert np.mean(quadratic(test_x) == test_y) < 0.85

    classes = np.unique(train_y)
    means = np.stack([train_x[train_y == c].mean(0) for c in classes])
    nearest = classes[((test_x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert np.mean(nearest == test_y) < 0.85


def test_no_class_has_a_single_fixed_colour(samples: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks = samples
    colours, labels = _pixels(images, masks)
    for train_id in PRESENT_TRAIN_IDS:
        spread = colours[labels == train_id].std(0).mean()
        assert spread > 0.03, (CITYSCAPES_CLASSES[train_id].name, spread)


# --------------------------------------------------------------------------- #
# Arguments, errors and helpers
# --------------------------------------------------------------------------- #


def test_len_and_describe() -> None:
    dataset = SyntheticCity("val", HEIGHT, WIDTH, lengths={"val": 20}, seed=3)
    assert len(dataset) == 20
    assert len(SyntheticCity("train")) == 512 and len(SyntheticCity("test")) == 64
    assert dataset.describe(17) == "synthetic_city[val][17] (seed 3)"


def test_accepts_numpy_integer_index(dataset: SyntheticCity) -> None:
    np.testing.assert_array_equal(dataset.load(np.int64(2))[1], dataset.load(2)[1])


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"split": "training"}, "split"),
        ({"height": 0}, "height"),
        ({"width": -3}, "width"),
        ({"height": 12.5}, "height"),
        ({"lengths": {"train": 0}}, r"lengths\['train'\]"),
        ({"lengths": {"validation": 3}}, "lengths"),
        ({"seed": -1}, "seed"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"blur_sigma": float("nan")}, "blur_sigma"),
        ({"color_jitter": -1.0}, "color_jitter"),
        ({"cache": "yes"}, "cache"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}: expected .*, found "):
        SyntheticCity(**kwargs)


@pytest.mark.parametrize("index", [4, 100, -1])
def test_index_out_of_range(index: int) -> None:
    dataset = SyntheticCity("val", HEIGHT, WIDTH, lengths={"val": 4})
    with pytest.raises(IndexError, match=rf"index: expected 0 <= index < 4 .*found {index}"):
        dataset.load(index)


def test_non_integer_index_is_a_type_error(dataset: SyntheticCity) -> None:
    with pytest.raises(TypeError):
        dataset.load(1.5)  # type: ignore[arg-type]


def test_render_grid_writes_a_png(tmp_path) -> None:
    path = tmp_path / "grid.png"
    grid = render_grid(2, str(path), height=32, width=64)
    assert path.stat().st_size > 0
    assert grid.shape == (2 * 32 + 4, 2 * 64 + 4, 3) and grid.dtype == np.uint8
