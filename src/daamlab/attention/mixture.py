"""Mixture of DAAM (the paper's appendix B; `appendix/density_adaptive_attention.py` as released).

Per head (a contiguous group of layers), K Gaussians with one scalar offset m_k and one scalar
spread c_k each, shared across features. Statistics run along the layer axis inside the group
(unbiased variance, as `torch.var` in the released code):
    y_k = (x - (mu + m_k)) / sqrt(var + 1e-8)
    G_k = exp(-y_k^2 / (2 c_k^2)) / sqrt(2 pi c_k^2)
    mixture = prod_k G_k, normalised to sum to 1 along the group's layers
    out = x * mixture + x            (DensityBlock's residual)
Despite the name it is a *product* of Gaussians. Parameters: 2 * g * K (64 at g=8, K=4, Table 3).

`normalise` chooses how the product becomes weights along the group's layers:
  "clamp" (default, as released): w = prod / max(sum(prod), 1e-8), the literal product in fp32. Where
      the product underflows (narrow spreads, outlying layers) the sum falls under 1e-8 and the
      weights of that group no longer sum to 1: they shrink towards 0 and `out` towards x; where
      every factor underflows they are exactly 0.
  "log": w = softmax over layers of log(prod), with the 1/sqrt(2 pi c^2) factors dropped (they
      cancel). Equal to "clamp" wherever the clamp does not bite (sum >= 1e-8); where it does, it
      stays a distribution that sums to 1, so the two differ exactly there.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from daamlab.attention.daam import split_layers
from daamlab.errors import DaamlabError

VAR_EPS = (
    1e-8  # the released module's eps, in the variance and the sum's clamp (its wrapper never changes it)
)


NORMALISE = ("clamp", "log")


class DAAMMixture(nn.Module):
    gated = True  # returns its weights with return_gates=True: the Importance Factor applies

    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        num_gaussians: int = 4,
        c_init: float | None = None,
        normalise: str = "clamp",
    ) -> None:
        """c_init=None draws c = exp(randn) as the released code does; a number sets every c to it
        (the paper's text says the scaled variance starts at 2). normalise: "clamp" | "log" (above)."""
        super().__init__()
        if normalise not in NORMALISE:
            raise DaamlabError(
                f"attention.normalise must be 'clamp' (as released) or 'log', got {normalise!r}"
            )
        self.normalise = normalise
        self.layers_per_head = split_layers(num_layers, num_heads, "DAAM mixture")
        if self.layers_per_head < 2:
            raise DaamlabError("DAAM mixture needs >= 2 layers per head (unbiased variance over layers)")
        self.num_heads = num_heads
        self.out_layers, self.out_dim = num_layers, dim
        self.offsets = nn.Parameter(torch.zeros(num_heads, num_gaussians))  # m: (g, K)
        c = (
            torch.exp(torch.randn(num_heads, num_gaussians))
            if c_init is None
            else torch.full((num_heads, num_gaussians), float(c_init))
        )
        self.c = nn.Parameter(c)  # (g, K)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        xh = x.view(B, self.num_heads, self.layers_per_head, d)  # (B, g, n, d)
        mu = xh.mean(dim=2, keepdim=True)
        std = torch.sqrt(xh.var(dim=2, keepdim=True, unbiased=True) + VAR_EPS)  # (B, g, 1, d)
        m = self.offsets[None, :, None, None, :]  # (1, g, 1, 1, K)
        c2 = self.c.square()[None, :, None, None, :]
        y = ((xh - mu) / std).unsqueeze(-1) - m / std.unsqueeze(-1)  # (B, g, n, d, K)
        if self.normalise == "clamp":  # the released arithmetic: the literal product, sum clamped
            gauss = torch.exp(-y.square() / (2 * c2)) / torch.sqrt(2 * math.pi * c2)
            prod = gauss.prod(dim=-1)  # (B, g, n, d); underflows to 0 for outlying layers
            w = prod / prod.sum(dim=2, keepdim=True).clamp(min=VAR_EPS)
        else:  # the same weights in log space: a distribution over the group's layers everywhere
            log_prod = (-y.square() / (2 * c2)).sum(dim=-1)  # (B, g, n, d)
            w = torch.softmax(log_prod, dim=2)
        return w.reshape(B, N, d)

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        w = self.gates(x)
        y = x * w + x
        return (y, w) if return_gates else y


# config name -> (module, fixed arguments); configs/attention/<name>.yaml sets the rest
VARIANTS = {"daam_mixture": (DAAMMixture, {})}
