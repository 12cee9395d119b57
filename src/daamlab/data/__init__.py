"""Data: a source's items -> (the feature cache | raw items) -> split/fold selection -> batches.

`build_datamodule(cfg, cached=...)` is called by the one mode decision (daamlab/build.py): cached
heads read the feature cache (built on demand), the encoder-in-the-loop modes read raw items.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from daamlab.data.augment import build_augment
from daamlab.data.datamodule import FeatureDataModule, validation_split
from daamlab.data.raw import RawDataModule
from daamlab.encoders import build_encoder
from daamlab.errors import DaamlabError
from daamlab.features import cached_feature_set
from daamlab.features.fingerprint import LOADER_KEYS
from daamlab.sources import build_source


def loader_options(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    loader = {k: data[k] for k in LOADER_KEYS if k in data}
    loader["shuffle_seed"] = cfg.seed  # the run's seed orders the batches (data.split_seed the dev split)
    return loader


def build_datamodule(cfg: DictConfig, *, cached: bool) -> FeatureDataModule:
    if cfg.get("encoder") is None:
        raise DaamlabError(f"data '{cfg.data.name}' yields raw items and needs an encoder: add encoder=...")
    loader = loader_options(cfg)
    if cached:
        load, prepare = cached_feature_set(cfg)
        return FeatureDataModule(load, prepare=prepare, **loader)
    source = build_source(cfg.data)
    augment = build_augment(OmegaConf.to_container(cfg.augment) if cfg.get("augment") else None, source.kind)
    return RawDataModule(source, build_encoder(cfg.encoder), augment=augment, **loader)


__all__ = ["FeatureDataModule", "RawDataModule", "build_datamodule", "validation_split"]
