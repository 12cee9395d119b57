"""GQ-DAAM: DAAM -> Linear(d, 512) -> grouped-query self-attention across the layer axis.

Two grouped-query attentions sit behind it:

`GroupedQueryAttention` (`gq_daam`) is the published computation (`scaled_dot_product_gqa` +
`MultiheadGQA` in each released GQDAAM.py). 8 query heads, 2 key/value heads, head dim 64:
    q_{h,j} = W_q x / sqrt(hd)                          query head j of key/value group h
    S_h     = (sum_j q_{h,j}) k_h^T / sqrt(hd)          the group's queries summed *inside the scores*
    A_h     = softmax(S_h)                              one softmax per key/value head
    o       = out_proj(LayerNorm([A_1 v_1, ..., A_hk v_hk]))   on the kv width 2 * 64 = 128
The query is divided by sqrt(hd) and the scores again (a temperature of 1 / hd), the LayerNorm
follows MAGNETO, weights are Xavier-normal with zero biases. This is not the grouped-query attention
of the literature: the 4 query heads of a group act as one query (their sum), so 8 query heads buy
what 2 would, and the output is 128 wide, not 512.

`StandardGQA` (`gq_daam_std`) is the textbook GQA (Ainslie et al., 2023): every query head keeps its
own 1/sqrt(hd) softmax and its own output, only K/V are shared by the heads of a group, the heads are
concatenated (512 wide) and projected. With kv_heads == query_heads it is multi-head attention. It is
the correct baseline beside the published module, as `mhsa` is beside `mhsa_paper`.

Parameters at d=1024: 16,384 (DAAM) + 524,800 (Linear) + 460,288 (published GQA) or 656,640 (standard).
"""

from __future__ import annotations

import torch
from torch import nn

from daamlab.attention.daam import DAAM
from daamlab.errors import DaamlabError


def _check_heads(embed_dim: int, query_heads: int, kv_heads: int) -> None:
    if query_heads < 1 or kv_heads < 1 or embed_dim % query_heads or query_heads % kv_heads:
        raise DaamlabError(
            f"GQA: query_heads={query_heads} must divide embed_dim={embed_dim} and kv_heads={kv_heads} "
            "must divide query_heads; set attention.query_heads / attention.kv_heads"
        )


def _xavier(*projs: nn.Linear) -> None:
    for proj in projs:  # the published MultiheadGQA's init (MAGNETO, gain 1)
        nn.init.xavier_normal_(proj.weight)
        nn.init.zeros_(proj.bias)


class GroupedQueryAttention(nn.Module):
    """The published GQA: the query heads of a group are summed before one softmax per kv head."""

    def __init__(self, *, embed_dim: int = 512, query_heads: int = 8, kv_heads: int = 2) -> None:
        super().__init__()
        _check_heads(embed_dim, query_heads, kv_heads)
        self.query_heads, self.kv_heads = query_heads, kv_heads
        self.head_dim = embed_dim // query_heads
        kv_dim = self.head_dim * kv_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, kv_dim)
        self.v_proj = nn.Linear(embed_dim, kv_dim)
        self.norm = nn.LayerNorm(kv_dim)  # on the kv width: the output is kv_heads * head_dim wide
        self.out_proj = nn.Linear(kv_dim, embed_dim)
        _xavier(self.q_proj, self.k_proj, self.v_proj, self.out_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        hq, hk, hd = self.query_heads, self.kv_heads, self.head_dim
        # query head i belongs to kv head i // (hq / hk): the published "b (h g) n d" split
        q = self.q_proj(x).view(B, N, hk, hq // hk, hd) / hd**0.5  # (B, N, hk, group, hd)
        k = self.k_proj(x).view(B, N, hk, hd)
        v = self.v_proj(x).view(B, N, hk, hd)
        scores = torch.einsum("bnhgd,bshd->bhns", q, k) / hd**0.5  # summed over the group: (B, hk, N, N)
        out = torch.einsum("bhns,bshd->bnhd", scores.softmax(dim=-1), v)  # (B, N, hk, hd)
        return self.out_proj(self.norm(out.reshape(B, N, hk * hd)))  # (B, N, embed_dim)


class StandardGQA(nn.Module):
    """Textbook grouped-query attention: per-query-head softmax, shared K/V, heads concatenated."""

    def __init__(self, *, embed_dim: int = 512, query_heads: int = 8, kv_heads: int = 2) -> None:
        super().__init__()
        _check_heads(embed_dim, query_heads, kv_heads)
        self.query_heads, self.kv_heads = query_heads, kv_heads
        self.head_dim = embed_dim // query_heads
        kv_dim = self.head_dim * kv_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, kv_dim)
        self.v_proj = nn.Linear(embed_dim, kv_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)  # all query heads' outputs, concatenated
        _xavier(self.q_proj, self.k_proj, self.v_proj, self.out_proj)  # same init as the published one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, E = x.shape
        hq, hk, hd = self.query_heads, self.kv_heads, self.head_dim
        q = self.q_proj(x).view(B, N, hq, hd).transpose(1, 2)  # (B, hq, N, hd)
        # each kv head serves hq / hk consecutive query heads: repeat it for them
        k = self.k_proj(x).view(B, N, hk, hd).transpose(1, 2).repeat_interleave(hq // hk, dim=1)
        v = self.v_proj(x).view(B, N, hk, hd).transpose(1, 2).repeat_interleave(hq // hk, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, hq, N, hd), 1/sqrt(hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, E))


class GQDAAM(nn.Module):
    """DAAM gates -> Linear(d, embed_dim) -> grouped-query self-attention over the layers."""

    gated = True  # returns the DAAM gates with return_gates=True: the Importance Factor applies

    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_heads: int = 8,
        embed_dim: int = 512,
        query_heads: int = 8,
        kv_heads: int = 2,
        standard: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.daam = DAAM(num_layers=num_layers, dim=dim, num_heads=num_heads, fused=fused)
        self.proj = nn.Linear(dim, embed_dim)  # the scripts' embed_transform: PyTorch's default init
        gqa = StandardGQA if standard else GroupedQueryAttention
        self.gqa = gqa(embed_dim=embed_dim, query_heads=query_heads, kv_heads=kv_heads)
        self.out_layers, self.out_dim = num_layers, embed_dim

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        y, w = self.daam(x, return_gates=True)  # (B, N, d) each
        y = self.gqa(self.proj(y))  # (B, N, embed_dim)
        return (y, w) if return_gates else y


# config name -> (module, fixed arguments); configs/attention/<name>.yaml sets the rest
VARIANTS = {"gq_daam": (GQDAAM, {}), "gq_daam_std": (GQDAAM, {"standard": True})}
