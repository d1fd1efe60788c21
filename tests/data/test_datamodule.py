"""SegmentationDataModule: the resumable training order and its checkpoint state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate


def batches(loader) -> list[dict]:
    return list(loader)


def test_loader_resumes_the_epoch_it_was_saved_in(compose_train):
    cfg = compose_train()
    fresh = instantiate(cfg.dataset, seed=9)
    assert fresh.state_dict() == {"seed": 9, "epoch": 0, "batches_done": 0}
    loader = fresh.train_dataloader()
    loader.sampler.set_epoch(2)
    epoch = batches(loader)
    assert len(epoch) == 4  # 16 samples in batches of 4

    resumed = instantiate(cfg.dataset, seed=0)  # the checkpoint's seed wins
    resumed.load_state_dict({"seed": 9, "epoch": 2, "batches_done": 1})
    rest = batches(resumed.train_dataloader())
    assert len(rest) == 3
    for got, want in zip(rest, epoch[1:], strict=True):
        assert torch.equal(got["index"], want["index"])
        assert torch.equal(got["image"], want["image"])  # same crops, flips, jitter
        assert torch.equal(got["mask"], want["mask"])


def test_every_epoch_has_its_own_order_and_val_is_unshuffled(compose_train):
    datamodule = instantiate(compose_train().dataset, seed=1)
    loader = datamodule.train_dataloader()
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        orders.append(torch.cat([b["index"] for b in loader]).tolist())
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(16))
    assert orders[0] != orders[1]
    val = torch.cat([b["index"] for b in datamodule.val_dataloader()]).tolist()
    assert val == list(range(8))


def test_data_parallel_val_and_test_see_every_image_once(compose_train):
    # 8 images on 3 ranks: shards of 3, 3 and 2, no image repeated to even them out.
    seen = {"val": [], "test": []}
    for rank in range(3):
        datamodule = instantiate(compose_train().dataset, seed=1)
        datamodule.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        for split in seen:
            loader = getattr(datamodule, f"{split}_dataloader")()
            seen[split] += torch.cat([b["index"] for b in loader]).tolist()
    assert sorted(seen["val"]) == sorted(seen["test"]) == list(range(8))


def test_unseeded_module_draws_a_seed_and_checkpoints_keep_it(compose_train):
    cfg = compose_train()
    first, second = (instantiate(cfg.dataset, seed=None) for _ in range(2))
    assert first.seed != second.seed  # 31 random bits each
    second.load_state_dict(first.state_dict())
    assert second.seed == first.seed


def test_bad_state_is_named(compose_train):
    cfg = compose_train()
    datamodule = instantiate(cfg.dataset, seed=0)
    with pytest.raises(KeyError, match=r"lacks \['batches_done'\]"):
        datamodule.load_state_dict({"seed": 1, "epoch": 0})


def test_label_histograms_are_counted_once_and_cached_per_fingerprint(tmp_path, monkeypatch):
    from cheeger.data.folder import ImageMaskFolder
    from tests.conftest import compose
    from tests.data.test_folder import split_tree, write_pair

    root = split_tree(tmp_path / "data")
    overrides = ["dataset=folder", f"dataset.root={root}", f"dataset.stats_cache={tmp_path}/c"]
    cfg = compose("train", overrides, tmp_path / "run")
    first = instantiate(cfg.dataset)
    assert first.check_labels(("train", "val")) == []
    counts = first.label_histogram("train")
    assert counts.samples == 4 and sum(counts.counts) == 4 * 32 * 48
    assert len(list((tmp_path / "c").iterdir())) == 2  # one file per split

    def unread(self, index):
        raise AssertionError("a cached split was read again")

    monkeypatch.setattr(ImageMaskFolder, "load", unread)
    again = instantiate(cfg.dataset)
    assert again.label_histogram("train") == counts  # from the cache, no file read
    monkeypatch.undo()
    # An edited mask changes the key: counted afresh.
    write_pair(root / "images/train/train_0.png", root / "masks/train/train_0.png", labels=(1, 1))
    edited = instantiate(cfg.dataset).label_histogram("train")
    assert edited.counts[1] > counts.counts[1]


def test_synthetic_classes_the_source_never_draws_are_not_required(compose_train):
    datamodule = instantiate(compose_train().dataset)
    assert datamodule.check_labels(("train",)) == []
    histogram = datamodule.label_histogram("train")
    assert histogram.counts[3] == 0  # wall: not drawn by the synthetic city
    strict = instantiate(compose_train("dataset.source.lengths={train: 1}").dataset)
    strict.dataset("train").source.present_train_ids = tuple(range(19))
    with pytest.raises(ValueError, match="'wall' \\(id 3\\)"):
        strict.check_labels(("train",))
