"""Data: sources -> FeatureSet -> FeatureDataModule. `build_datamodule(cfg)` picks the source by `data.name`."""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig, OmegaConf

from daamlab.data.datamodule import FeatureDataModule
from daamlab.features.featureset import FeatureSet, FeatureSplit
from daamlab.sources.toy import make_toy
from daamlab.errors import DaamlabError

LOADER_KEYS = {
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "fold",
    "fold_groups",
    "dev_fraction",
    "split_seed",
    "layers",
}


def uses_cache(cfg: DictConfig) -> bool:
    """False when the encoder runs inside the training loop: cache.enabled=false, or a LoRA baseline."""
    from daamlab.models.lora import LORA_METHODS

    enabled = OmegaConf.select(cfg, "cache.enabled", default=True)
    return bool(enabled) and OmegaConf.select(cfg, "attention.name") not in LORA_METHODS


def build_datamodule(cfg: DictConfig) -> FeatureDataModule:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    loader = {k: data.pop(k) for k in LOADER_KEYS if k in data}
    loader["shuffle_seed"] = cfg.seed  # the run's seed orders the batches (data.split_seed the dev split)
    name = data.pop("name")
    if name == "toy":
        return FeatureDataModule(partial(make_toy, **data), **loader)
    if not uses_cache(cfg):  # raw items; the model runs the encoder (daamlab/data/raw.py)
        return raw_datamodule(cfg, loader)
    from daamlab.features import cached_feature_set  # the encoder + cache path

    load, prepare = cached_feature_set(cfg)
    return FeatureDataModule(load, prepare=prepare, **loader)


def raw_datamodule(cfg: DictConfig, loader: dict):
    from daamlab.data.augment import build_augment
    from daamlab.data.raw import RawDataModule
    from daamlab.sources import build_source
    from daamlab.encoders import build_encoder

    if cfg.get("encoder") is None:
        raise DaamlabError(f"data '{cfg.data.name}' yields raw items and needs an encoder: add encoder=...")
    source = build_source(cfg.data)
    augment = build_augment(OmegaConf.to_container(cfg.augment) if cfg.get("augment") else None, source.kind)
    return RawDataModule(source, build_encoder(cfg.encoder), augment=augment, **loader)


__all__ = ["FeatureDataModule", "FeatureSet", "FeatureSplit", "build_datamodule", "uses_cache"]
