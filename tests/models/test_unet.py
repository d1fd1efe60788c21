from __future__ import annotations

import pytest
import torch

from cheeger.models.heads import ConvHead
from cheeger.models.unet import UNet


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
@pytest.mark.parametrize("output_stride", [1, 2, 4])
def test_unet_shapes(norm, output_stride):
    net = UNet(base_channels=4, depth=2, norm=norm, output_stride=output_stride, max_channels=8)
    out = net(torch.randn(2, 3, 16, 24))
    assert out.shape == (2, net.out_channels, 16 // output_stride, 24 // output_stride)
    expected = {1: 4, 2: 8, 4: 8}[output_stride]
    assert net.out_channels == expected


def test_unet_gradients_reach_first_layer():
    net = UNet(base_channels=4, depth=3)
    net(torch.randn(1, 3, 32, 32)).square().mean().backward()
    grad = net.stem[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("output_stride", [1, 2])
def test_channels_last_layout_changes_speed_not_results(output_stride):
    torch.manual_seed(0)
    plain = UNet(base_channels=4, depth=2, output_stride=output_stride).double()
    nhwc = UNet(base_channels=4, depth=2, output_stride=output_stride, channels_last=True)
    nhwc = nhwc.double()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64, requires_grad=True)
    out = nhwc(x)
    assert out.is_contiguous()  # heads may .view() the features
    torch.testing.assert_close(out, plain(x), rtol=1e-10, atol=1e-10)
    (grad_nhwc,) = torch.autograd.grad(out.square().sum(), x)
    (grad_plain,) = torch.autograd.grad(plain(x).square().sum(), x)
    torch.testing.assert_close(grad_nhwc, grad_plain, rtol=1e-10, atol=1e-10)


def test_unet_bad_arguments():
    with pytest.raises(ValueError, match="output_stride"):
        UNet(depth=2, output_stride=8)
    with pytest.raises(ValueError, match="norm"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 8"):
        UNet(base_channels=2, depth=3)(torch.randn(1, 3, 20, 16))


def test_conv_head_upsamples_and_checks_channels():
    head = ConvHead(in_channels=6, num_classes=5)
    logits, aux = head(torch.randn(2, 6, 8, 12), torch.zeros(2, 3, 16, 24))
    assert logits.shape == (2, 5, 16, 24) and aux == {}
    with pytest.raises(ValueError, match=r"\(B, 6, h, w\)"):
        head(torch.randn(2, 4, 8, 12), torch.zeros(2, 3, 16, 24))


def test_conv_head_is_per_pixel_linear():
    head = ConvHead(in_channels=3, num_classes=2)
    f = torch.randn(1, 3, 4, 4)
    logits, _ = head(f)
    w = head.classifier.weight[:, :, 0, 0]
    expected = torch.einsum("kc,bchw->bkhw", w, f) + head.classifier.bias[None, :, None, None]
    torch.testing.assert_close(logits, expected)
