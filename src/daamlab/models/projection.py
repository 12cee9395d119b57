"""Per-layer projection to a common width, for encoders whose layers differ in width.

CNN and hierarchical encoders (EfficientNet's blocks: 16..320 channels; Swin's stages) give layers
of different widths. The cache stores them zero-padded to the widest (`FeatureSet.info["layer_widths"]`
says which leading features of each layer are real), and the head starts with one trainable
Linear(width_k -> dim) per layer, so every attention variant sees (B, N, dim) as usual. Its
parameters are counted in the head's trainable parameters like any other part of the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from daamlab.errors import DaamlabError


class LayerProjection(nn.Module):
    def __init__(self, widths: Sequence[int], dim: int) -> None:
        super().__init__()
        if dim < 1 or any(w < 1 for w in widths):
            raise DaamlabError(f"layer widths {list(widths)} and projection_dim={dim} must be >= 1")
        self.widths = [int(w) for w in widths]
        self.out_dim = dim
        self.layers = nn.ModuleList(nn.Linear(w, dim) for w in self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, max width), zero-padded -> (B, N, dim); the padding is never read."""
        pairs = enumerate(zip(self.layers, self.widths, strict=True))
        projected = [proj(x[:, k, :width]) for k, (proj, width) in pairs]  # N x (B, dim)
        return torch.stack(projected, dim=1)


def needs_projection(widths: Sequence[int] | None) -> bool:
    """True when the layers differ in width; equal widths go to the attention unchanged."""
    return widths is not None and len(set(widths)) > 1


def cached_layer_widths(dm) -> list[int] | None:
    """The real width of each layer the datamodule serves, from the cache's encoder record; None if uniform."""
    data = getattr(dm, "data", None)
    widths = (data.info.get("encoder") or {}).get("layer_widths") if data is not None else None
    if widths is None:
        return None
    layers = getattr(dm, "layers", None)  # data.layers: a subset of the cached layers
    return [widths[k] for k in layers] if layers is not None else list(widths)
