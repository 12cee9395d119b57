"""RawDataModule: the split protocol of FeatureDataModule over raw source items, for the uncached mode.

With `cache.enabled=false` (and for the LoRA baselines) the encoder runs inside the LightningModule,
so batches carry raw inputs: (inputs: list of B waveforms | images | texts, y: (B,) int64). Folds,
the dev split, per-split summaries and the epoch-seeded shuffling are FeatureDataModule's own code;
only the datasets differ. The source's items are read once into memory (a `Source` has no random
access), in source order, so row r here is row r of the cache the same config would build.
Training items may be augmented on the fly (daamlab/data/augment.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from daamlab.data.augment import Augment
from daamlab.data.datamodule import FeatureDataModule
from daamlab.data.sampling import EpochShuffleSampler
from daamlab.encoders import LayerEncoder
from daamlab.errors import DaamlabError
from daamlab.sources import Source

log = logging.getLogger(__name__)


@dataclass
class RawSplit:
    """Rows of one split: the raw inputs and the metadata FeatureSplit has (labels, ids, groups)."""

    inputs: list[Any]
    labels: np.ndarray  # (n,) int64, indices into RawSet.class_names
    ids: np.ndarray  # (n,) str
    groups: np.ndarray  # (n,) str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RawSet:
    name: str
    class_names: list[str]
    splits: dict[str, RawSplit]
    num_layers: int  # what the encoder gives per item: (N, d)
    dim: int
    info: dict = field(default_factory=dict)  # recorded in metrics.json as data_info


def concat(splits: Sequence[RawSplit]) -> RawSplit:
    if len(splits) == 1:
        return splits[0]
    return RawSplit(
        [x for s in splits for x in s.inputs],
        np.concatenate([s.labels for s in splits]),
        np.concatenate([s.ids for s in splits]),
        np.concatenate([s.groups for s in splits]),
    )


def read_source(source: Source, num_layers: int, dim: int, info: dict[str, Any]) -> RawSet:
    splits = {}
    for split in source.splits():
        inputs, labels, ids, groups = [], [], [], []
        for item in source.items(split):
            if item.label not in source.class_names:
                raise DaamlabError(
                    f"source '{source.name}' item {item.id} has label {item.label!r}, "
                    f"not one of {source.class_names}"
                )
            inputs.append(item.input)
            labels.append(source.class_names.index(item.label))
            ids.append(item.id)
            groups.append(item.group)
        splits[split] = RawSplit(
            inputs,
            np.asarray(labels, dtype=np.int64),
            np.asarray(ids, dtype=str),
            np.asarray(groups, dtype=str),
        )
    skipped = list(getattr(source, "skipped", []))
    if skipped:
        log.warning("%d source items were skipped, e.g. %s: %s", len(skipped), *skipped[0])
    info = {**info, "skipped": len(skipped)}
    return RawSet(source.name, list(source.class_names), splits, num_layers, dim, info)


class RawDataset(Dataset):
    """Batches of raw inputs; indices >= len (from EpochTaggedSampler) carry the epoch for augmentation."""

    def __init__(
        self, split: RawSplit, rows: np.ndarray, augment: Augment | None = None, seed: int = 0
    ) -> None:
        self.split, self.rows, self.augment, self.seed = split, rows, augment, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, index: Sequence[int]) -> tuple[list[Any], torch.Tensor]:
        epochs, positions = np.divmod(np.asarray(index), len(self.rows))
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")  # sorted rows, as FeatureDataModule's batches
        rows, epochs = rows[order], epochs[order]
        inputs = [self.split.inputs[r] for r in rows]
        if self.augment is not None:
            inputs = [
                self.augment(x, np.random.default_rng([self.seed, int(e), int(r)]))
                for x, e, r in zip(inputs, epochs, rows, strict=True)
            ]
        return inputs, torch.from_numpy(self.split.labels[rows])

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        inputs, y = self.__getitems__([i])
        return inputs[0], y[0]


class EpochTaggedSampler(EpochShuffleSampler):
    """EpochShuffleSampler's order, each index shifted by epoch * num_items: a dataset (in any worker
    process) reads the epoch from the index itself."""

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * self.num_items
        return (offset + i for i in super().__iter__())


class RawDataModule(FeatureDataModule):
    def __init__(
        self, source: Source, encoder: LayerEncoder, *, augment: Augment | None = None, **loader: Any
    ) -> None:
        """`encoder`: the one the model runs (its N and d shape the batches' features; built once, shared)."""
        kind = getattr(encoder, "kind", None)
        if kind is not None and kind != getattr(source, "kind", kind):
            raise DaamlabError(
                f"the encoder takes {kind} input but data '{source.name}' yields {source.kind}; "
                "choose a matching encoder (see configs/encoder/)"
            )
        info = {"cache": None, "source": source.name, "source_version": source.version}
        info["encoder"] = encoder.fingerprint()
        super().__init__(lambda: read_source(source, encoder.num_layers, encoder.dim, info), **loader)
        self.encoder, self.augment = encoder, augment

    def _dataset(self, split: RawSplit, rows: np.ndarray, train: bool = False) -> RawDataset:
        return RawDataset(split, rows, self.augment if train else None, self.shuffle_seed)

    def _concat(self, splits: Sequence[RawSplit]) -> RawSplit:
        return concat(splits)

    def _sampler(self, num_items: int) -> EpochTaggedSampler:
        return EpochTaggedSampler(num_items, self.shuffle_seed)
