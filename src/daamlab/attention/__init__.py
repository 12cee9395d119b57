"""Attention heads over stacked layer features: every module maps (B, N, d) -> (B, out_layers, out_dim).

`build_attention(name, num_layers, dim, **cfg)` is the one entry point; the names are the config
names under configs/attention/. DAAM-family modules also take `return_gates=True` and then return
`(y, gates)` with gates shaped like x (the Importance Factor's input).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from daamlab.attention.daam import DAAM
from daamlab.attention.gq_daam import GQDAAM, GroupedQueryAttention
from daamlab.attention.mhsa import MHSA, MHSAPaper
from daamlab.attention.mixture import DAAMMixture
from daamlab.attention.pooling import Identity, WeightedSum
from daamlab.errors import DaamlabError

ATTENTION: dict[str, Callable[..., nn.Module]] = {
    "daam": DAAM,
    "daam_v2": partial(DAAM, num_heads=1),
    "daam_mixture": DAAMMixture,
    "gq_daam": GQDAAM,
    "gaussian": partial(DAAM, learn_density=False),
    "mhsa": MHSA,
    "mhsa_bn": partial(MHSA, batch_norm=True),
    "mhsa_paper": MHSAPaper,
    "weighted_sum": WeightedSum,
    "none": Identity,
}

GATED = {"daam", "daam_v2", "daam_mixture", "gq_daam", "gaussian"}  # these accept return_gates=True


def auto_heads(num_layers: int, most: int = 8, per_head: int = 3) -> int:
    """The most layer groups (<= `most`, the paper's 8) that divide the layers with >= `per_head` layers
    each (the paper's 3: with 1 or 2 the per-group z-scores cannot tell layers apart); else 1.
    24 layers -> 8, 16 -> 4, 6 -> 2, 40 -> 8, 4 -> 1."""
    for heads in range(min(most, num_layers), 0, -1):
        if num_layers % heads == 0 and num_layers // heads >= per_head:
            return heads
    return 1


def build_attention(name: str, num_layers: int, dim: int, **cfg) -> nn.Module:
    if name not in ATTENTION:
        raise DaamlabError(f"unknown attention '{name}'; choose one of: {', '.join(sorted(ATTENTION))}")
    if cfg.get("num_heads") == "auto":  # the layer count is known only once the features are (any encoder)
        cfg = {**cfg, "num_heads": auto_heads(num_layers)}
    try:
        return ATTENTION[name](num_layers=num_layers, dim=dim, **cfg)
    except TypeError as e:  # a config key the module does not take
        raise DaamlabError(f"attention '{name}': {e}") from None


__all__ = [
    "ATTENTION",
    "GATED",
    "DAAM",
    "DAAMMixture",
    "GQDAAM",
    "GroupedQueryAttention",
    "MHSA",
    "MHSAPaper",
    "WeightedSum",
    "Identity",
    "build_attention",
]
