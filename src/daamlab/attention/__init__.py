"""Attention heads over stacked layer features: every module maps (B, N, d) -> (B, out_layers, out_dim).

`build_attention(name, num_layers, dim, **cfg)` is the one entry point; the names are the config
names under configs/attention/. A module whose class says `gated = True` (the DAAM family) also takes
`return_gates=True` and then returns `(y, gates)` with gates shaped like x (the Importance Factor's
input); `is_gated(module)` reads that, so a new gated variant needs only its module and its yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from daamlab.attention.daam import DAAM
from daamlab.attention.gq_daam import GQDAAM, GroupedQueryAttention, StandardGQA
from daamlab.attention.mhsa import MHSA, MHSAPaper
from daamlab.attention.mixture import DAAMMixture
from daamlab.attention.pooling import Identity, WeightedSum
from daamlab.errors import DaamlabError

ATTENTION: dict[str, Callable[..., nn.Module]] = {
    "daam": DAAM,
    "daam_v2": partial(DAAM, num_heads=1),
    "daam_mixture": DAAMMixture,
    "gq_daam": GQDAAM,
    "gq_daam_std": partial(GQDAAM, standard=True),
    "gaussian": partial(DAAM, learn_density=False),
    "mhsa": MHSA,
    "mhsa_bn": partial(MHSA, batch_norm=True),
    "mhsa_paper": MHSAPaper,
    "weighted_sum": WeightedSum,
    "none": Identity,
}


def is_gated(module: nn.Module) -> bool:
    """Whether a built attention module returns gates (`return_gates=True`): its class says so."""
    return bool(getattr(module, "gated", False))


def gated_names() -> list[str]:
    """The config names whose modules are gated, read from their classes (for messages and tests)."""
    return sorted(n for n, f in ATTENTION.items() if getattr(getattr(f, "func", f), "gated", False))


def build_attention(name: str, num_layers: int, dim: int, **cfg) -> nn.Module:
    if name not in ATTENTION:
        raise DaamlabError(f"unknown attention '{name}'; choose one of: {', '.join(sorted(ATTENTION))}")
    try:
        return ATTENTION[name](num_layers=num_layers, dim=dim, **cfg)
    except TypeError as e:  # a config key the module does not take
        raise DaamlabError(f"attention '{name}': {e}") from None


__all__ = [
    "ATTENTION",
    "is_gated",
    "gated_names",
    "StandardGQA",
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
