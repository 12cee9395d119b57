"""The layer-wise feature cache: extract once with a frozen encoder, train every variant from disk.

- featureset.py: the in-memory view (splits of features, labels, ids, groups)
- fingerprint.py: the cache key (encoder, preprocessing, data, source version) -> directory name
- extract.py: source -> encoder -> resumable, shardable parts -> merged cache
- store.py: the on-disk format (docs/architecture.md), atomic writes, verified reads

`cached_feature_set(cfg) -> (load, prepare)` is what the datamodule uses: `prepare()` builds a
missing cache (global rank 0 only; Lightning calls it before `setup`), `load()` verifies and
memory-maps it. Neither builds the encoder when the cache exists.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab.features.extract import build_cache, locate
from daamlab.features.featureset import FeatureSet, FeatureSplit
from daamlab.features.store import read_cache
from daamlab.sources import build_source


def cached_feature_set(cfg: DictConfig) -> tuple[Callable[[], FeatureSet], Callable[[], None]]:
    @cache
    def source():  # one per run: a folder source lists its files once, not at every step
        return build_source(cfg.data)

    @cache
    def located():
        return locate(cfg, source())

    def prepare() -> None:
        if rank_zero_only.rank == 0:  # other ranks read what rank 0 wrote
            build_cache(cfg, source=source())

    def load() -> FeatureSet:
        directory, key, fp = located()
        verify = OmegaConf.select(cfg, "cache.verify", default="full")
        return read_cache(directory, key, fp, verify=verify, name=cfg.data.name)

    return load, prepare


__all__ = ["FeatureSet", "FeatureSplit", "cached_feature_set"]
