"""The pass-through encoder for sources whose items are already layer features, (N, d) arrays
(the toy source; a researcher's own precomputed features): it stacks them, nothing more."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from daamlab.errors import DaamlabError


class FeaturesEncoder:
    kind = "features"

    def __init__(self, num_layers: int, dim: int) -> None:
        self.num_layers, self.dim = num_layers, dim

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "features", "num_layers": self.num_layers, "dim": self.dim}

    def encode(self, inputs: list[Any]) -> torch.Tensor:
        x = np.stack([np.asarray(a, dtype=np.float32) for a in inputs])  # (B, N, d)
        if x.shape[1:] != (self.num_layers, self.dim):
            raise DaamlabError(
                f"items are {x.shape[1]} x {x.shape[2]} features, not encoder.num_layers x encoder.dim = "
                f"{self.num_layers} x {self.dim}; set those to the data's shape"
            )
        return torch.from_numpy(x)


def build(cfg: DictConfig) -> FeaturesEncoder:
    return FeaturesEncoder(int(cfg.num_layers), int(cfg.dim))
