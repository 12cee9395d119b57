"""Mixture of DAAM (the paper's appendix B; `appendix/density_adaptive_attention.py` as released).

Per head (a contiguous group of layers), K Gaussians with one scalar offset m_k and one scalar
spread c_k each, shared across features. Statistics run along the layer axis inside the group
(unbiased variance, as `torch.var` in the released code):
    y_k = (x - (mu + m_k)) / sqrt(var + 1e-8)
    G_k = exp(-y_k^2 / (2 c_k^2)) / sqrt(2 pi c_k^2)
    mixture = prod_k G_k, normalised to sum to 1 along the group's layers
    out = x * mixture + x            (DensityBlock's residual)
Despite the name it is a *product* of Gaussians. The normalisation is computed as a softmax of the
log-product over layers: equal to prod/sum(prod), without underflow, and the 1/sqrt(2 pi c^2)
factors cancel in it. Parameters: 2 * g * K (64 at g=8, K=4, the paper's Table 3).
"""

from __future__ import annotations

import torch
from torch import nn

from daamlab.attention.daam import split_layers
from daamlab.errors import DaamlabError

VAR_EPS = 1e-8  # the released module's eps (its multi-head wrapper never passes a different one)


class DAAMMixture(nn.Module):
    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        num_gaussians: int = 4,
        c_init: float | None = None,
    ) -> None:
        """c_init=None draws c = exp(randn) as the released code does; a number sets every c to it
        (the paper's text says the scaled variance starts at 2)."""
        super().__init__()
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
        log_prod = (-y.square() / (2 * c2)).sum(dim=-1)  # (B, g, n, d)
        w = torch.softmax(log_prod, dim=2)  # normalised over the group's layers
        return w.reshape(B, N, d)

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        w = self.gates(x)
        y = x * w + x
        return (y, w) if return_gates else y
