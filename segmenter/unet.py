"""A Ronneberger-style U-Net (2015): variable depth, `n_filters` doubling per level, batch norm.

Unlike the original, convolutions are 'same'-padded so the output has the input's size
(the input must be a multiple of 2**depth; `segmenter.inputs.pad_to_multiple` sees to that).
"""
from __future__ import annotations

import torch
from torch import nn


def _double_conv(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; returns logits (N×out_channels×H×W)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 4,
                 n_filters: int = 16, batch_norm: bool = True):
        super().__init__()
        if depth < 1 or n_filters < 1:
            raise ValueError(f"depth and n_filters must be positive, got {depth} and {n_filters}")
        self.depth = depth
        widths = [n_filters * 2 ** level for level in range(depth + 1)]
        self.encoder = nn.ModuleList([_double_conv(in_channels, widths[0], batch_norm)] +
                                     [_double_conv(widths[i], widths[i + 1], batch_norm)
                                      for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.decoder = nn.ModuleList([_double_conv(2 * widths[i], widths[i], batch_norm)
                                      for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
