import pytest
import torch

from segmenter.unet import UNet


@pytest.mark.parametrize("depth,in_channels,out_channels", [(1, 1, 1), (2, 3, 1), (3, 1, 4)])
def test_output_has_the_input_size_and_requested_channels(depth, in_channels, out_channels):
    network = UNet(in_channels, out_channels, depth=depth, n_filters=4).eval()
    size = 8 * network.multiple
    with torch.no_grad():
        out = network(torch.zeros(2, in_channels, size, size + network.multiple))
    assert out.shape == (2, out_channels, size, size + network.multiple)


def test_filters_double_per_level():
    network = UNet(1, 1, depth=3, n_filters=5)
    widths = [block[0].out_channels for block in network.encoder]
    assert widths == [5, 10, 20, 40]


def test_invalid_depth_is_rejected():
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=0)
