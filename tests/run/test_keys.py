"""Run-config keys: the head variant, the group choices, the swept knobs."""

from __future__ import annotations

import pytest

from cheeger.run import keys


@pytest.mark.parametrize(
    ("overrides", "variant"),
    [
        ([], "conv"),
        (["head=spectral"], "spectral/lanczos/temper/embedding"),
        (["head=spectral_logits"], "spectral_logits/chebyshev8/heat_learned/logits"),
        (["head=spectral", "solver=dense", "response=heat"], "spectral/dense/heat/embedding"),
    ],
)
def test_head_variant_and_extras_from_composed_configs(overrides, variant, tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from cheeger.train import hydra_choices
    from tests.conftest import compose

    cfg = compose("train", overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert HydraConfig.initialized()
    extras = keys.run_config_extras(resolved, hydra_choices())
    assert extras[keys.HEAD_VARIANT] == variant
    assert all("." not in key for key in extras)  # W&B panels cannot address dotted keys
    if overrides:
        assert extras["k"] == 16 and extras["knn"] == 8
        assert extras[keys.choice("solver")] == variant.split("/")[1]
    else:
        assert "k" not in extras and extras[keys.choice("head")] == "conv"
    # Without Hydra's choices the classes name the groups.
    assert keys.head_variant(resolved, {}).split("/")[0] in ("ConvHead", "SpectralHead")


def test_trimap_width_parses_only_trimap_keys():
    assert keys.trimap_width(keys.trimap("test", 16)) == 16
    assert keys.trimap_width("test/mIoU") is None
    assert keys.trimap_width("other/trimap_iou@4") is None
