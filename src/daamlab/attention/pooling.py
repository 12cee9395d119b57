"""Layer-aggregation baselines without attention: SUPERB's weighted sum, and the identity."""

from __future__ import annotations

import torch
from torch import nn


class WeightedSum(nn.Module):
    """s3prl's Featurizer: softmax-normalised learnable layer weights, one vector out: (B, 1, d).
    N parameters, initialised equal (s3prl's zeros)."""

    def __init__(self, *, num_layers: int, dim: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.out_layers, self.out_dim = 1, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights.softmax(dim=0)  # (N,)
        return torch.einsum("n,bnd->bd", w, x).unsqueeze(1)


class Identity(nn.Module):
    """`none`: the decoder sees the stacked layer features unchanged."""

    def __init__(self, *, num_layers: int, dim: int) -> None:
        super().__init__()
        self.out_layers, self.out_dim = num_layers, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# config name -> (module, fixed arguments); configs/attention/<name>.yaml sets the rest
VARIANTS = {"weighted_sum": (WeightedSum, {}), "none": (Identity, {})}
