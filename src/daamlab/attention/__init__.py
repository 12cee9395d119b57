"""Attention heads over stacked layer features: every module maps (B, N, d) -> (B, out_layers, out_dim).

`build_attention(name, num_layers, dim, **cfg)` is the one entry point; the names are the config
names under configs/attention/. Each module file of this package declares its variants in a
`VARIANTS` dict (config name -> (class, fixed arguments)), found here by importing the package's
modules: a new variant takes its module (or one line in an existing one) and its yaml, nothing else.
A module whose class says `gated = True` (the DAAM family) also takes `return_gates=True` and then
returns `(y, gates)` with gates shaped like x (the Importance Factor's input).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from torch import nn

from daamlab.errors import DaamlabError


@cache
def variants() -> dict[str, tuple[type[nn.Module], dict[str, Any]]]:
    """Every module's VARIANTS, by config name."""
    found: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, variant in getattr(module, "VARIANTS", {}).items():
            if name in found:
                raise RuntimeError(f"attention variant '{name}' is declared twice ({info.name}.py)")
            found[name] = variant
    return found


def is_gated(module: nn.Module) -> bool:
    """Whether a built attention module returns gates (`return_gates=True`): its class says so."""
    return bool(getattr(module, "gated", False))


def gated_names() -> list[str]:
    """The config names whose modules are gated, read from their classes (for messages and tests)."""
    return sorted(name for name, (cls, _) in variants().items() if getattr(cls, "gated", False))


def auto_heads(num_layers: int, most: int = 8, per_head: int = 3) -> int:
    """The most layer groups (<= `most`, the paper's 8) that divide the layers with >= `per_head` layers
    each (the paper's 3: with 1 or 2 the per-group z-scores cannot tell layers apart); else 1.
    24 layers -> 8, 16 -> 4, 6 -> 2, 40 -> 8, 4 -> 1."""
    for heads in range(min(most, num_layers), 0, -1):
        if num_layers % heads == 0 and num_layers // heads >= per_head:
            return heads
    return 1


def build_attention(name: str, num_layers: int, dim: int, **cfg: Any) -> nn.Module:
    if name not in variants():
        raise DaamlabError(f"unknown attention '{name}'; choose one of: {', '.join(sorted(variants()))}")
    cls, fixed = variants()[name]
    if cfg.get("num_heads") == "auto":  # the layer count is known only once the features are (any encoder)
        cfg = {**cfg, "num_heads": auto_heads(num_layers)}
    try:
        return cls(num_layers=num_layers, dim=dim, **{**fixed, **cfg})
    except TypeError as e:  # a config key the module does not take
        raise DaamlabError(f"attention '{name}': {e}") from None


__all__ = ["auto_heads", "build_attention", "gated_names", "is_gated", "variants"]
