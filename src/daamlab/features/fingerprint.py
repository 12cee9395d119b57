"""The cache key: which encoder, preprocessing and data made the features, hashed into a directory name.

The key is computed from the config and the source's version alone, so a run finds its cache
without loading the encoder. Keys that do not change the features (where the encoder runs, how
many items per batch, how the training run reads the data) are left out, so changing them reuses
the cache. What the encoder itself reports (weights checksum, resolved revision, preprocessing)
is recorded in the manifest at extraction time.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

FORMAT = 1  # bump when the on-disk layout changes
# data keys that choose how a run reads the cache (batches, folds, the dev split, a layer subset),
# not what is in it: changing them reuses the cache
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
ENCODER_RUNTIME_KEYS = {
    "name",
    "device",
    "batch_size",
}  # where/how fast the encoder runs, not what it computes


def cache_key(cfg: DictConfig, source_version: str) -> dict[str, Any]:
    encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "format": FORMAT,
        "encoder": {k: v for k, v in encoder.items() if k not in ENCODER_RUNTIME_KEYS},
        "data": {k: v for k, v in data.items() if k not in LOADER_KEYS},
        "source_version": source_version,
    }


def fingerprint(cfg: DictConfig, key: dict[str, Any]) -> str:
    """`<data>-<encoder>-<16 hex of sha256(key)>`: readable in a directory listing, unique per key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    encoder = cfg.encoder.get("name") or cfg.encoder.get("type")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cfg.data.name}-{encoder}") + f"-{digest}"


def key_differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """`a.b: x here, y there` for every leaf that differs between two keys."""
    out = []
    for k in sorted(set(expected) | set(found)):
        a, b = expected.get(k, "<absent>"), found.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += key_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} is {b!r} there, {a!r} here")
    return out
