"""Density Adaptive Attention (DAAM), as published: Algorithm 1 + the released MultiHeadDAAM.

Heads split the *layer* axis into `num_heads` contiguous groups. Per sample and per feature, over
the layers of a group:
    mu  = mean(x)                     var = |mean(x^2) - mu^2| + 1e-8
    z   = (x - (mu + delta)) / sqrt(var + 1e-5)
    w   = exp(-z^2 / (2 * xi))        y = x * w
with learnable delta (init 0) and xi (init 2) of shape (num_heads, dim): 2 * g * d parameters.
xi is used as max(xi, 1e-3) (fused.floor_xi, a straight-through clamp): an optimiser step that pushes
it to 0 or below cannot make NaN gates or gates above 1; config checks refuse xi_init <= 0 up front.
DAAMv1 is g=8, DAAMv2 is g=1. `learn_density=False` freezes delta and xi at their init: the
fixed-Gaussian baseline (`gaussian`), which isolates what learning the density adds.

`fused=True` (the default) runs the gate through the custom autograd Function in `fused.py`: equal
outputs and gradients, a fraction of the saved memory, and one fused kernel under `torch.compile`.
`gates()` below is the plain reference that `fused=False` runs.
"""

from __future__ import annotations

import torch
from torch import nn

from daamlab.attention.fused import NORM_EPS, VAR_FLOOR, floor_xi, fused_daam
from daamlab.errors import DaamlabError


def split_layers(num_layers: int, num_heads: int, what: str) -> int:
    """Layers per head; a clear error when the heads do not divide the layers."""
    if num_heads < 1 or num_layers % num_heads:
        divisors = [h for h in range(1, num_layers + 1) if num_layers % h == 0]
        raise DaamlabError(
            f"{what}: num_heads={num_heads} does not divide the encoder's {num_layers} layers; "
            f"set attention.num_heads to one of {divisors}"
        )
    return num_layers // num_heads


class DAAM(nn.Module):
    gated = True  # returns its gates with return_gates=True: the Importance Factor applies

    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        delta_init: float = 0.0,
        xi_init: float = 2.0,
        learn_density: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.layers_per_head = split_layers(num_layers, num_heads, "DAAM")
        self.num_heads, self.fused = num_heads, fused
        self.out_layers, self.out_dim = num_layers, dim
        delta = torch.full((num_heads, dim), float(delta_init))
        xi = torch.full((num_heads, dim), float(xi_init))
        if learn_density:
            self.delta, self.xi = nn.Parameter(delta), nn.Parameter(xi)
        else:  # buffers: saved with the model, never trained, not counted as parameters
            self.register_buffer("delta", delta)
            self.register_buffer("xi", xi)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        xh = x.view(B, self.num_heads, self.layers_per_head, d)  # (B, g, N/g, d)
        mu = xh.mean(dim=2, keepdim=True)  # (B, g, 1, d)
        var = (xh.square().mean(dim=2, keepdim=True) - mu.square()).abs() + VAR_FLOOR
        z = (xh - (mu + self.delta[:, None])) / torch.sqrt(var + NORM_EPS)  # delta: (g, 1, d)
        xi = floor_xi(self.xi)[:, None]  # >= XI_FLOOR: the gates stay in (0, 1] (fused.floor_xi)
        w = torch.exp(-z.square() / (2 * xi))  # (B, g, N/g, d)
        return w.reshape(B, N, d)

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        if self.fused:
            y, w = fused_daam(x, self.delta, self.xi)
        else:
            w = self.gates(x)
            y = x * w
        return (y, w) if return_gates else y


# config name -> (module, fixed arguments); configs/attention/<name>.yaml sets the rest
VARIANTS = {
    "daam": (DAAM, {}),
    "daam_v2": (DAAM, {"num_heads": 1}),
    "gaussian": (DAAM, {"learn_density": False}),  # the fixed-Gaussian baseline: delta, xi frozen
}
