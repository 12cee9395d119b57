"""Data: sources -> FeatureSet -> FeatureDataModule. `build_datamodule(cfg)` picks the source by `data.name`."""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig, OmegaConf

from daamlab.data.datamodule import FeatureDataModule
from daamlab.data.features import FeatureSet, FeatureSplit
from daamlab.data.sources.toy import make_toy

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


def build_datamodule(cfg: DictConfig) -> FeatureDataModule:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    loader = {k: data.pop(k) for k in LOADER_KEYS if k in data}
    loader["shuffle_seed"] = cfg.seed  # the run's seed orders the batches (data.split_seed the dev split)
    name = data.pop("name")
    if name == "toy":
        return FeatureDataModule(partial(make_toy, **data), **loader)
    from daamlab.features import cached_feature_set  # the encoder + cache path

    load, prepare = cached_feature_set(cfg)
    return FeatureDataModule(load, prepare=prepare, **loader)


__all__ = ["FeatureDataModule", "FeatureSet", "FeatureSplit", "build_datamodule"]
