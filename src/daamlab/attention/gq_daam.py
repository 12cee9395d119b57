"""GQ-DAAM: DAAM -> Linear(d, 512) -> grouped-query self-attention across the layer axis.

The GQA block follows the MAGNETO-style module the paper's code copied (8 query heads, 2 key/value
heads, head dim 64, Xavier-normal init, zero biases, LayerNorm on the 2 * 64 = 128-dim output before
the output projection; the query groups are summed, not averaged). Its quirk is kept so numbers can be
matched: the query is divided by sqrt(head_dim) and the scores again, a temperature of 1 / head_dim.
Parameters at d=1024: 16,384 (DAAM) + 524,800 (Linear) + 460,288 (GQA).
"""

from __future__ import annotations

import torch
from torch import nn

from daamlab.attention.daam import DAAM
from daamlab.errors import DaamlabError


class GroupedQueryAttention(nn.Module):
    def __init__(self, *, embed_dim: int = 512, query_heads: int = 8, kv_heads: int = 2) -> None:
        super().__init__()
        if embed_dim % query_heads or query_heads % kv_heads:
            raise DaamlabError("GQA needs query_heads | embed_dim and kv_heads | query_heads")
        self.query_heads, self.kv_heads = query_heads, kv_heads
        self.head_dim = embed_dim // query_heads
        kv_dim = self.head_dim * kv_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, kv_dim)
        self.v_proj = nn.Linear(embed_dim, kv_dim)
        self.norm = nn.LayerNorm(kv_dim)
        self.out_proj = nn.Linear(kv_dim, embed_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_normal_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        hq, hk, hd = self.query_heads, self.kv_heads, self.head_dim
        q = self.q_proj(x).view(B, N, hk, hq // hk, hd)  # (B, N, kv heads, group, hd)
        k = self.k_proj(x).view(B, N, hk, hd)
        v = self.v_proj(x).view(B, N, hk, hd)
        q = q / hd**0.5
        scores = torch.einsum("bnhgd,bshd->bhgns", q, k) / hd**0.5  # (B, hk, group, N, N)
        attn = scores.softmax(dim=-1)
        out = torch.einsum("bhgns,bshd->bnhd", attn, v)  # summed over the query group: (B, N, hk, hd)
        return self.out_proj(self.norm(out.reshape(B, N, hk * hd)))


class GQDAAM(nn.Module):
    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        embed_dim: int = 512,
        query_heads: int = 8,
        kv_heads: int = 2,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.daam = DAAM(num_layers=num_layers, dim=dim, num_heads=num_heads, fused=fused)
        self.proj = nn.Linear(dim, embed_dim)
        self.gqa = GroupedQueryAttention(embed_dim=embed_dim, query_heads=query_heads, kv_heads=kv_heads)
        self.out_layers, self.out_dim = num_layers, embed_dim

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        y, w = self.daam(x, return_gates=True)  # (B, N, d) each
        y = self.gqa(self.proj(y))  # (B, N, embed_dim)
        return (y, w) if return_gates else y
