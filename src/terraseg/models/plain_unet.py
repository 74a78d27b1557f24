"""A plain U-Net with configurable depth and base filters.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015, with padded convolutions and batch normalisation (so output size = input size).
"""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    """U-Net: ``depth`` down-sampling levels, ``base_filters * 2**level`` filters per level.

    Args:
        in_channels: input bands.
        out_channels: output logits per pixel.
        depth: number of 2x down-samplings (input H and W must be multiples of ``2**depth``).
        base_filters: filters of the first level.

    Shapes: input ``(N, in_channels, H, W)`` -> logits ``(N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 4, base_filters: int = 32) -> None:
        super().__init__()
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.inc = _double_conv(in_channels, widths[0])
        self.down = nn.ModuleList(_double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_double_conv(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, out_channels, H, W)`` of a batch ``(N, C, H, W)`` (H and W divisible by ``2**depth``)."""
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)
