"""FeatureDataModule: split/fold selection over a FeatureSet -> batches (x: (B, N, d), y: (B,)).

Protocols (every one a config key):
- `fold: null`: the source's own `train` / `test` splits (CIFAR-100, AG News, toy).
- `fold: k`: leave-one-group-out; test = rows whose group is `fold_groups[k-1]` (IEMOCAP: Session k),
  train = every other group. Groups default to the sorted distinct groups of the data.
- `layers: null` uses every cached layer; a list of layer indices (0-based, along the cache's layer
  axis) trains on those layers only (the Importance Factor ablation, experiment=paper_layer_ablation).
- a `validation` split of the data's own (generic sources: a split folder or column) is the
  validation set when `fold` is null and `dev_fraction` is 0.
- `dev_fraction: 0` validates on the test rows, as the paper does (its reported number is the best
  validation accuracy, i.e. selected on the test split). `dev_fraction > 0` holds out that share of
  the training *items* (by id, so chunks of one utterance stay together) as an honest dev split.
Batches are gathered with one fancy index per batch (`__getitems__`), no per-item Python work, and
leave in the cache's dtype (float16): half the bytes to pin and copy to the device, where the model
widens them (Classifier.forward). Converting on the host instead costs more than the gather itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from daamlab.data.sampling import EpochShuffleSampler
from daamlab.errors import DaamlabError
from daamlab.features.featureset import FeatureSet, FeatureSplit

log = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    def __init__(self, split: FeatureSplit, rows: np.ndarray, layers: Sequence[int] | None = None) -> None:
        self.split, self.rows, self.layers = split, rows, layers

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(self.rows[np.asarray(index)])  # sorted reads are sequential on a memmap
        x = self.split.features[rows]
        if self.layers is not None:
            x = x[:, self.layers]
        x = torch.from_numpy(np.ascontiguousarray(x))  # as stored; widened on the device
        y = torch.from_numpy(self.split.labels[rows])
        return x, y

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def _batch(items: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return items  # __getitems__ already returns the batch


def summarize(split: FeatureSplit, rows: np.ndarray, class_names: Sequence[str]) -> dict:
    """Rows, distinct items, groups and per-class row counts of a selection (logged, for metrics.json)."""
    counts = np.bincount(split.labels[rows], minlength=len(class_names))
    return {
        "rows": len(rows),
        "items": len(np.unique(split.ids[rows])),
        "groups": sorted(set(split.groups[rows].tolist())),
        "classes": {name: int(n) for name, n in zip(class_names, counts, strict=True)},
    }


def concat(splits: Sequence[FeatureSplit]) -> FeatureSplit:
    if len(splits) == 1:
        return splits[0]
    return FeatureSplit(
        np.concatenate([s.features for s in splits]),
        np.concatenate([s.labels for s in splits]),
        np.concatenate([s.ids for s in splits]),
        np.concatenate([s.groups for s in splits]),
    )


def validation_split(dev_fraction: float, fold: int | None, splits: Iterable[str]) -> str:
    """What a run validates on, so what its best_val_acc and the epoch it keeps are read on:
    `dev` (data.dev_fraction > 0), the data's own `validation` split (no fold), else `test`."""
    if dev_fraction > 0:
        return "dev"
    if fold is None and "validation" in splits:
        return "validation"
    return "test"


class FeatureDataModule(L.LightningDataModule):
    def __init__(
        self,
        load: Callable[[], FeatureSet],
        *,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        fold: int | None = None,
        fold_groups: Sequence[str] | None = None,
        dev_fraction: float = 0.0,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        layers: Sequence[int] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.load, self.prepare = load, prepare
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.fold, self.fold_groups = fold, list(fold_groups) if fold_groups else None
        self.dev_fraction, self.split_seed, self.shuffle_seed = dev_fraction, split_seed, shuffle_seed
        self.layers = list(layers) if layers is not None else None
        self.data: FeatureSet | None = None
        self.split_summary: dict[str, dict] = {}  # train/val/test -> rows, items, groups, per-class counts
        self.validates_on: str | None = None  # dev | validation | test (validation_split)

    def prepare_data(self) -> None:  # rank 0 only: build a missing cache
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = self.load()
        self._check_layers()
        (train, train_rows), (test, test_rows) = self._train_test(self.data)
        train_rows, dev_rows = self._dev_split(train, train_rows)
        self.validates_on = validation_split(self.dev_fraction, self.fold, self.data.splits)
        log.info("%s: validating on the %s split", self.data.name, self.validates_on)
        if self.validates_on == "dev":
            val, val_rows = train, dev_rows
        elif self.validates_on == "validation":  # the data's own (a generic source's split folder/column)
            val = self.data.splits["validation"]
            val_rows = np.arange(len(val))
        else:
            val, val_rows = test, test_rows
        self.train_set = self._dataset(train, train_rows, train=True)
        self.val_set = self._dataset(val, val_rows)
        self.test_set = self._dataset(test, test_rows)
        self.split_summary = {
            "train": summarize(train, train_rows, self.data.class_names),
            "val": {"split": self.validates_on, **summarize(val, val_rows, self.data.class_names)},
            "test": summarize(test, test_rows, self.data.class_names),
        }
        for name, summary in self.split_summary.items():
            if not summary["rows"]:  # nothing to train, validate or test on: no result could mean anything
                raise DaamlabError(
                    f"the {name} split of '{self.data.name}' has no items (data.fold={self.fold}, "
                    f"data.dev_fraction={self.dev_fraction}); choose another data.fold or data.dev_fraction, "
                    "or give the source more items"
                )
            log.info(
                "%s %s: %d rows, %d items, groups %s; per class: %s",
                self.data.name,
                name,
                summary["rows"],
                summary["items"],
                ",".join(summary["groups"]),
                ", ".join(f"{c} {n}" for c, n in summary["classes"].items()),
            )

    def _dataset(self, split: FeatureSplit, rows: np.ndarray, train: bool = False) -> Dataset:
        return ArrayDataset(split, rows, self.layers)

    def _concat(self, splits: Sequence[FeatureSplit]) -> FeatureSplit:
        return concat(splits)

    def _sampler(self, num_items: int) -> EpochShuffleSampler:
        return EpochShuffleSampler(num_items, self.shuffle_seed)

    def _check_layers(self) -> None:
        if self.layers is None:
            return
        n = self.data.num_layers
        bad = [k for k in self.layers if not 0 <= k < n]
        if bad or not self.layers or len(set(self.layers)) != len(self.layers):
            raise DaamlabError(
                f"data.layers={self.layers} must be distinct layer indices in 0..{n - 1} "
                f"('{self.data.name}' has {n} layers), or null for all"
            )

    def _train_test(self, data: FeatureSet) -> tuple[tuple[FeatureSplit, np.ndarray], ...]:
        """(split, row indices) for train and test; rows index the split, nothing is copied."""
        if self.fold is None:
            missing = {"train", "test"} - set(data.splits)
            if missing:
                raise DaamlabError(
                    f"data '{data.name}' has splits {sorted(data.splits)}, not {sorted(missing)}; "
                    "it is a grouped dataset: choose a fold with data.fold=1..K"
                )
            train, test = data.splits["train"], data.splits["test"]
            return (train, np.arange(len(train))), (test, np.arange(len(test)))
        rows = self._concat(list(data.splits.values()))
        present = sorted(set(rows.groups.tolist()))
        groups = self.fold_groups or present
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 1 <= self.fold <= len(groups):
            raise DaamlabError(
                f"data.fold={self.fold!r} is not a fold: '{data.name}' has {len(groups)} folds "
                f"({', '.join(groups)}); use data.fold=1..{len(groups)}"
            )
        unknown = sorted(set(present) - set(groups))
        if unknown:  # rows no fold would ever test on: a typo in fold_groups, not a silent extra training set
            raise DaamlabError(
                f"'{data.name}' has rows in groups {unknown} that data.fold_groups={groups} does not list"
            )
        held_out = rows.groups == groups[self.fold - 1]
        if not held_out.any():
            raise DaamlabError(f"fold {self.fold}: no rows in group '{groups[self.fold - 1]}'")
        return (rows, np.flatnonzero(~held_out)), (rows, np.flatnonzero(held_out))

    def _dev_split(self, train: FeatureSplit, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not 0 <= self.dev_fraction < 1:
            raise DaamlabError(
                f"data.dev_fraction={self.dev_fraction} must be in [0, 1): the share of training items "
                "held out for validation"
            )
        if self.dev_fraction == 0:
            return rows, None
        items = np.unique(train.ids[rows])
        rng = np.random.default_rng(self.split_seed)
        dev_items = rng.choice(items, size=max(1, round(self.dev_fraction * len(items))), replace=False)
        is_dev = np.isin(train.ids[rows], dev_items)
        return rows[~is_dev], rows[is_dev]

    @property
    def num_layers(self) -> int:
        return len(self.layers) if self.layers is not None else self.data.num_layers

    @property
    def dim(self) -> int:
        return self.data.dim

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler(len(dataset)) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=_batch,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
