"""Frozen encoders that turn raw items into pooled layer features (N, d).

`build_encoder(cfg.encoder)` imports `daamlab.encoders.<cfg.type>` and calls its
`build(cfg) -> LayerEncoder`: one module per encoder family, no central registry to edit.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from daamlab.errors import DaamlabError


class LayerEncoder(Protocol):
    num_layers: int  # N: the layers kept (embeddings excluded, as the paper)
    dim: int  # d (after any per-layer projection a CNN encoder needs: see its module)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the features: model id + revision/checksum, dtype, layers, pooling,
        preprocessing. Part of the cache key."""
        ...

    def encode(self, inputs: list[Any]) -> torch.Tensor:
        """Raw inputs of one batch -> (B, N, d) float32 on the CPU, mean-pooled over valid frames/tokens."""
        ...


def build_encoder(cfg: DictConfig) -> LayerEncoder:
    kind = cfg.get("type")
    try:
        module = importlib.import_module(f"daamlab.encoders.{kind}")
    except ModuleNotFoundError as e:
        if e.name != f"daamlab.encoders.{kind}":
            raise
        raise DaamlabError(f"unknown encoder type '{kind}' (encoder.type); see configs/encoder/") from None
    return module.build(cfg)
