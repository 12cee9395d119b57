"""Losses: cross-entropy, and the focal loss as the paper's code computes it (alpha 0.25, gamma 2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daamlab.errors import DaamlabError


class FocalLoss(nn.Module):
    """alpha * (1 - p_t + 1e-6)^gamma * CE, averaged; alpha is one scalar for every class, as published."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.5) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        p_t = torch.exp(-ce)
        return (self.alpha * (1 - p_t + 1e-6) ** self.gamma * ce).mean()


def build_loss(name: str, **cfg) -> nn.Module:
    if name == "focal":
        return FocalLoss(**cfg)
    if name == "ce":
        return nn.CrossEntropyLoss()
    raise DaamlabError(f"unknown loss '{name}'; choose 'focal' or 'ce'")
