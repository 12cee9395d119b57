"""Data sources: one module per dataset, each with `build(cfg.data) -> Source` (see base.py)."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item, Source, waveform_16k


def build_source(cfg: DictConfig) -> Source:
    name = cfg.get("source", cfg.name)
    try:
        module = importlib.import_module(f"daamlab.sources.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"daamlab.sources.{name}":
            raise
        raise DaamlabError(f"unknown data source '{name}'; see configs/data/") from None
    return module.build(cfg)


__all__ = ["Item", "Source", "build_source", "waveform_16k"]
