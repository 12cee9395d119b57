"""A labelled train/test dataset read through HF `datasets`: the shared half of cifar100.py and agnews.py.

Where the data come from (`data.*`): `path` (a local copy: a `save_to_disk` folder, or a folder of
parquet/arrow files named by split, e.g. a snapshot of the hub repo) or, when `path` is null, the hub
id `hub_id` (downloaded once into the HF cache; with HF_HUB_OFFLINE=1 only the cache is used).
Rows whose input cannot be used are skipped and listed in `skipped`, never dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# raw cell -> (model input, None) or (None, why it was skipped)
Convert = Callable[[Any], tuple[Any, str | None]]


def load_splits(cfg: DictConfig, title: str):
    """The DatasetDict named by data.path or data.hub_id, with a train and a test split."""
    import datasets

    path, hub_id = cfg.get("path"), cfg.hub_id
    if path:
        local = Path(path).expanduser()
        if not local.exists():
            raise DaamlabError(
                f"data.path={local} does not exist: point it at a local {title} (a save_to_disk folder, or a "
                f"folder of parquet files named train-*/test-*), or set data.path=null to use {hub_id} "
                "from the hub"
            )
        where = f"data.path={local}"
        try:
            if (local / "dataset_dict.json").is_file():
                dataset = datasets.load_from_disk(str(local))
            else:
                dataset = datasets.load_dataset(str(local))
        except (OSError, ValueError) as e:
            raise DaamlabError(
                f"{where} could not be read as {title} data ({_first_line(e)}); expected a save_to_disk "
                "folder (with dataset_dict.json) or a folder of parquet files named train-*/test-*"
            ) from None
    else:
        where = f"data.hub_id={hub_id}"
        try:
            dataset = datasets.load_dataset(hub_id)
        except (OSError, ValueError) as e:
            raise DaamlabError(
                f"could not load {title} from the hub ({where}: {_first_line(e)}). With HF_HUB_OFFLINE=1 it "
                "must already be in the HF cache; or set data.path=/path/to/a local copy (a save_to_disk "
                "folder or parquet files named train-*/test-*)"
            ) from None
    if not isinstance(dataset, datasets.DatasetDict) or not set(SPLITS) <= set(dataset):
        found = sorted(dataset) if isinstance(dataset, datasets.DatasetDict) else "one unnamed split"
        raise DaamlabError(f"{where} holds the splits {found}; {title} needs 'train' and 'test'")
    return dataset, where


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def class_names_of(dataset, column: str, where: str) -> list[str]:
    """The label column's ClassLabel names; plain integer labels 0..K-1 are named by their number."""
    from datasets import ClassLabel

    feature = dataset["train"].features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if feature.dtype not in ("int8", "int16", "int32", "int64"):
        raise DaamlabError(f"{where}: label column '{column}' holds {feature.dtype}, not class indices")
    top = max(max(dataset[split][column]) for split in SPLITS)
    log.info("%s: label column '%s' has no class names; naming classes 0..%d", where, column, top)
    return [str(k) for k in range(top + 1)]


class HubSource:
    """Items of the train and test splits: id `<split>-<row>`, group = split, input from `convert`."""

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        dataset,
        where: str,
        input_column: str,
        label_column: str,
        convert: Convert,
        protocol: dict[str, Any],
    ) -> None:
        for column in (input_column, label_column):
            columns = dataset["train"].column_names
            if column not in columns:
                raise DaamlabError(
                    f"{where} has no column '{column}' (columns: {', '.join(columns)}); "
                    "set data.input_column / data.label_column"
                )
        self.name, self.kind, self.where = name, kind, where
        self.dataset, self.input_column, self.label_column = dataset, input_column, label_column
        self.convert = convert
        self.class_names = class_names_of(dataset, label_column, where)
        self.class_counts: dict[str, dict[str, int]] = {}  # split -> class -> items yielded
        # (item id, reason) for every row not yielded, appended while items() runs (the cache records
        # the entries added during its pass); it only grows: iterating a split twice lists it twice
        self.skipped: list[tuple[str, str]] = []
        digest = hashlib.sha256(repr(sorted(protocol.items())).encode())
        for split in SPLITS:
            digest.update(f"{split}:{len(dataset[split])}:{dataset[split]._fingerprint}".encode())
        self.version = f"{name}-1-{digest.hexdigest()[:16]}"
        log.info("%s from %s: %s", name, where, ", ".join(f"{s} {len(dataset[s])} rows" for s in SPLITS))

    def splits(self) -> list[str]:
        return list(SPLITS)

    def num_items(self, split: str) -> int | None:
        return len(self.dataset[split])

    def items(self, split: str) -> Iterator[Item]:
        if split not in SPLITS:
            raise DaamlabError(f"{self.name} has the splits {list(SPLITS)}, not '{split}'")
        first_skip = len(self.skipped)
        counts: Counter[str] = Counter()
        rows = self.dataset[split].select_columns([self.input_column, self.label_column])
        for index, row in enumerate(rows):
            item_id = f"{split}-{index:05d}"
            label = row[self.label_column]
            if label is None or not 0 <= label < len(self.class_names):
                self.skipped.append((item_id, f"label {label!r} is not a class index"))
                continue
            value, reason = self.convert(row[self.input_column])
            if reason is not None:
                self.skipped.append((item_id, reason))
                continue
            counts[self.class_names[label]] += 1
            yield Item(id=item_id, group=split, label=self.class_names[label], input=value)
        self.class_counts[split] = {name: counts[name] for name in self.class_names}
        log.info(
            "%s %s items per class: %s",
            self.name,
            split,
            ", ".join(f"{name} {n}" for name, n in self.class_counts[split].items()),
        )
        skipped = self.skipped[first_skip:]
        if skipped:
            log.warning(
                "%s %s: skipped %d row(s): %s",
                self.name,
                split,
                len(skipped),
                "; ".join(f"{item} ({reason})" for item, reason in skipped),
            )
