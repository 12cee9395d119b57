"""Decoders from the attended layer features to logits.

`dat` (the paper's): each layer's d-vector is reshaped to an H x W map, the layers are channels;
conv3x3 N -> 512, ReLU, conv3x3 512 -> N, ReLU, flatten, Linear(N*d, classes). Xavier-uniform weights.
Maps: 32x32 for d=1024, 64x80 for d=5120 (as published), the most square factorisation otherwise.
`linear`: flatten, Linear(N*d, classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from daamlab.errors import DaamlabError


def square_map(dim: int) -> tuple[int, int]:
    """The most square H x W = dim with H <= W (32x32 for 1024, 64x80 for 5120)."""
    h = max(k for k in range(1, math.isqrt(dim) + 1) if dim % k == 0)
    return h, dim // h


class DATDecoder(nn.Module):
    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_classes: int,
        channels: int = 512,
        map_shape: Sequence[int] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        h, w = square_map(dim) if map_shape is None else tuple(map_shape)
        if h * w != dim:
            raise DaamlabError(
                f"decoder.map_shape={[h, w]} holds {h * w} values but each layer has {dim} features; "
                f"set decoder.map_shape to two numbers whose product is {dim}, e.g. {list(square_map(dim))}, "
                "or null to choose automatically"
            )
        self.map_shape = (h, w)
        self.conv1 = nn.Conv2d(num_layers, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, num_layers, 3, padding=1)
        self.fc = nn.Linear(num_layers * dim, num_classes)
        for m in (self.conv1, self.conv2, self.fc):
            nn.init.xavier_uniform_(m.weight)
        # channels-last (NHWC) is oneDNN's and cuDNN's native conv layout: no reorders around each conv
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.conv1.to(memory_format=self.memory_format)
        self.conv2.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        x = x.reshape(B, N, *self.map_shape)  # (B, N, H, W): layers as channels
        x = x.contiguous(memory_format=self.memory_format)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


class LinearDecoder(nn.Module):
    def __init__(self, *, num_layers: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(num_layers * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


DECODERS = {"dat": DATDecoder, "linear": LinearDecoder}


def build_decoder(name: str, num_layers: int, dim: int, num_classes: int, **cfg) -> nn.Module:
    if name not in DECODERS:
        raise DaamlabError(f"unknown decoder '{name}'; choose one of: {', '.join(DECODERS)}")
    return DECODERS[name](num_layers=num_layers, dim=dim, num_classes=num_classes, **cfg)
