"""The in-memory view of a feature set: what the cache reader returns (and the datamodule serves)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureSplit:
    """Rows of one split. `features` may be a read-only memmap; it is indexed, never copied whole."""

    features: np.ndarray  # (n, N, d) float16 or float32
    labels: np.ndarray  # (n,) int64, indices into FeatureSet.class_names
    ids: np.ndarray  # (n,) str: the source item (chunks of one utterance share it)
    groups: np.ndarray  # (n,) str: session / voice / split group, the unit of folds

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.labels) == len(self.ids) == len(self.groups) == n):
            raise ValueError(
                f"split has {n} feature rows but {len(self.labels)} labels, {len(self.ids)} ids, "
                f"{len(self.groups)} groups"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FeatureSet:
    name: str
    class_names: list[str]
    splits: dict[str, FeatureSplit]
    info: dict = field(default_factory=dict)  # e.g. the cache fingerprint, recorded in metrics.json

    @property
    def num_layers(self) -> int:
        return next(iter(self.splits.values())).features.shape[1]

    @property
    def dim(self) -> int:
        return next(iter(self.splits.values())).features.shape[2]
