"""Multi-head self-attention heads: the correct cross-layer one, with BatchNorm, and the published one.

`mhsa`: self-attention across the N layer vectors of each sample (batch-first), 8 heads: 4d^2 + 4d
parameters. `mhsa_bn` adds BatchNorm1d over the layer channels (the paper's MHA -> BN; its scripts
call BatchNorm2d on a 3-D tensor, which cannot run, and BatchNorm1d(N) has the same 2N parameters).

`mhsa_paper` is the published module as it ran: `nn.MultiheadAttention` with batch_first=False fed
(B, N, d), so attention mixes the *samples of the mini-batch*, separately per layer, and predictions
depend on batch composition. With `layer` set (IEMOCAP used index 22) it sees that one layer only,
as an unbatched sequence of the B samples. It exists to match the paper's MHA numbers, not as a baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from daamlab.errors import DaamlabError


class MHSA(nn.Module):
    def __init__(self, *, num_layers: int, dim: int, num_heads: int = 8, batch_norm: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.BatchNorm1d(num_layers) if batch_norm else nn.Identity()
        self.out_layers, self.out_dim = num_layers, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, need_weights=False)  # (B, N, d): each layer attends to all layers
        return self.norm(y)  # BatchNorm1d: channels = layers


class MHSAPaper(nn.Module):
    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        layer: int | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if layer is not None and not 0 <= layer < num_layers:
            raise DaamlabError(f"mhsa_paper: layer={layer} is outside the encoder's {num_layers} layers")
        self.layer = layer
        self.attn = nn.MultiheadAttention(dim, num_heads)  # batch_first=False, as published
        self.out_layers = num_layers if layer is None else 1
        self.norm = nn.BatchNorm1d(self.out_layers) if batch_norm else nn.Identity()
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is not None:
            x = x[:, self.layer : self.layer + 1]  # (B, 1, d)
        # (B, N, d) read as (seq=B, batch=N, d): attention runs across the mini-batch, per layer
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.norm(y)


# config name -> (module, fixed arguments); configs/attention/<name>.yaml sets the rest
VARIANTS = {"mhsa": (MHSA, {}), "mhsa_bn": (MHSA, {"batch_norm": True}), "mhsa_paper": (MHSAPaper, {})}
