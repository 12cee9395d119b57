"""The protocol the generic sources share (audio_folder, image_folder, text_table, hf_dataset).

A generic source lists its examples as `Row`s (id, raw label, optional split and group, and a
reference its reader turns into the model input); everything between that list and the items the
cache stores is decided here, once, from `data.*`:
- labels: stripped of surrounding whitespace, then merged by `label_map` (e.g. {exc: hap});
  the classes are the sorted label names, or `classes: [...]` (its order; rows of other labels
  are dropped and counted as skipped). One class is refused: there is nothing to classify.
- splits, first that applies: `num_folds` (k-fold by `group_column`: every group in one fold,
  folds balanced by items, deterministic; one split `all` whose groups are fold1..foldK, so
  `data.fold=k` tests on fold k); the data's own splits (a split column or split folders, names
  normalised: train, validation, test); a stratified random split of `test_fraction`, seeded.
- skipped rows: (id, reason) in `skipped`, which the cache manifest and metrics.json count; listing
  problems (hidden files, rows without a label...) join them on the first pass over the data.
Bad input is one DaamlabError line, raised before anything is read or written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item

log = logging.getLogger(__name__)

# what split folders / split column values may be called -> the name the datamodule uses
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
SHOWN_SKIPS = 20  # skipped rows listed in the log (all of them are in the cache manifest)


@dataclass
class Row:
    id: str  # stable and unique: the file name relative to the root, or `<split>-<row number>`
    label: str  # as read (the protocol strips and merges it)
    ref: Any  # what the source's reader turns into the input: a Path, a text, a dataset row
    split: str | None = None  # as read (the protocol normalises it); None: the data has no split
    group: str | None = None  # the group column's value, for k-fold


@dataclass(frozen=True)
class Protocol:
    classes: list[str] | None
    label_map: dict[str, str]
    num_folds: int | None
    test_fraction: float
    seed: int
    group_column: str | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Protocol:
        classes = cfg.get("classes")
        label_map = cfg.get("label_map") or {}
        if isinstance(label_map, DictConfig):
            label_map = OmegaConf.to_container(label_map)
        if not isinstance(label_map, Mapping):
            raise DaamlabError(f"data.label_map must be a mapping like {{exc: hap}}, got {label_map!r}")
        label_map = {str(k).strip(): str(v).strip() for k, v in label_map.items()}
        num_folds = cfg.get("num_folds")
        if num_folds is not None and (
            isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2
        ):
            raise DaamlabError(f"data.num_folds={num_folds!r} must be a whole number >= 2, or null")
        if num_folds is not None and not cfg.get("group_column"):
            raise DaamlabError(
                f"data.num_folds={num_folds} needs data.group_column: the column whose values (e.g. speakers) "
                "stay together in one fold"
            )
        fraction = cfg.get("test_fraction", 0.2)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise DaamlabError(f"data.test_fraction={fraction!r} must be a number in (0, 1), e.g. 0.2")
        return cls(
            classes=[str(c).strip() for c in classes] if classes is not None else None,
            label_map=label_map,
            num_folds=num_folds,
            test_fraction=float(fraction),
            seed=int(cfg.get("seed", 0)),
            group_column=cfg.get("group_column"),
        )

    def describe(self) -> dict[str, Any]:
        """What the cache fingerprint must see (a changed protocol is a different set of items)."""
        return {
            "classes": self.classes,
            "label_map": sorted(self.label_map.items()),
            "num_folds": self.num_folds,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "group_column": self.group_column,
        }


@dataclass
class Assignment:
    class_names: list[str]
    splits: dict[str, list[Row]]  # split -> rows, in listing order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason), decided while listing
    how: str = ""  # one line for the log: which split protocol applied


def fold_of_groups(sizes: Mapping[str, int], num_folds: int) -> dict[str, int]:
    """group -> fold (0-based): largest groups first, each into the fold with the fewest items so far
    (ties: the lower fold), groups of equal size in name order. Deterministic, no seed needed."""
    folds = [0] * num_folds
    out = {}
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        k = min(range(num_folds), key=lambda i: (folds[i], i))
        out[group] = k
        folds[k] += sizes[group]
    return out


def fold_names(num_folds: int) -> list[str]:
    """fold1..foldK, zero-padded so that sorting them keeps fold order (fold01..fold12)."""
    width = len(str(num_folds)) if num_folds >= 10 else 1
    return [f"fold{k:0{width}d}" for k in range(1, num_folds + 1)]


def stratified_test(labels: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """A bool mask: `fraction` of each class's rows (at least 1, never all) drawn with `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for name in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == name)
        if len(rows) < 2:
            raise DaamlabError(
                f"class '{name}' has {len(rows)} item; a stratified split (data.test_fraction={fraction}) "
                "needs at least 2 per class: add items, drop the class (data.classes=[...]) or give the data splits"
            )
        n_test = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        mask[rng.choice(rows, size=n_test, replace=False)] = True
    return mask


def assign(rows: Sequence[Row], protocol: Protocol, where: str) -> Assignment:
    """Labels, classes and splits of the listed rows (see the module docstring)."""
    skipped: list[tuple[str, str]] = []
    kept: list[Row] = []
    for row in rows:
        label = str(row.label).strip() if row.label is not None else ""
        if not label:
            skipped.append((row.id, "no label"))
            continue
        row.label = protocol.label_map.get(label, label)
        kept.append(row)
    present = sorted({row.label for row in kept})
    if protocol.classes is not None:
        unknown = [c for c in protocol.classes if c not in present]
        if unknown:
            raise DaamlabError(
                f"data.classes lists {unknown}, which no item of {where} has (labels found: {', '.join(present)})"
            )
        class_names = list(protocol.classes)
        dropped = [row for row in kept if row.label not in class_names]
        skipped += [(row.id, f"label '{row.label}' is not in data.classes") for row in dropped]
        kept = [row for row in kept if row.label in class_names]
    else:
        class_names = present
    if len(class_names) < 2:
        found = f"only the class '{class_names[0]}'" if class_names else "no labelled item"
        raise DaamlabError(
            f"{where} has {found}: a classifier needs at least 2 classes; check data.label_column "
            "(and data.classes / data.label_map)"
        )

    if protocol.num_folds is not None:
        splits, how = _folds(kept, protocol, skipped, where)
    elif any(row.split is not None for row in kept):
        splits, how = _given_splits(kept, skipped, where)
    else:
        is_test = stratified_test([row.label for row in kept], protocol.test_fraction, protocol.seed)
        splits = {
            "train": [row for row, t in zip(kept, is_test, strict=True) if not t],
            "test": [row for row, t in zip(kept, is_test, strict=True) if t],
        }
        how = f"stratified random split, test_fraction {protocol.test_fraction}, seed {protocol.seed}"
    return Assignment(class_names, splits, skipped, how)


def _folds(
    rows: list[Row], protocol: Protocol, skipped: list[tuple[str, str]], where: str
) -> tuple[dict[str, list[Row]], str]:
    k = protocol.num_folds
    grouped = []
    for row in rows:
        if row.group is None or not str(row.group).strip():
            skipped.append((row.id, f"no value in group column '{protocol.group_column}'"))
        else:
            row.group = str(row.group).strip()
            grouped.append(row)
    sizes = Counter(row.group for row in grouped)
    if len(sizes) < k:
        raise DaamlabError(
            f"{where} has {len(sizes)} distinct '{protocol.group_column}' groups, fewer than data.num_folds={k}: "
            f"every fold needs a group of its own; set data.num_folds <= {len(sizes)}"
        )
    fold = fold_of_groups(sizes, k)
    names = fold_names(k)
    for row in grouped:
        row.split, row.group = "all", names[fold[row.group]]
    per_fold = Counter(row.group for row in grouped)
    how = (
        f"{k} folds by '{protocol.group_column}' ({len(sizes)} groups; items per fold: "
        + ", ".join(f"{n} {per_fold[n]}" for n in names)
        + ")"
    )
    return {"all": grouped}, how


def _given_splits(
    rows: list[Row], skipped: list[tuple[str, str]], where: str
) -> tuple[dict[str, list[Row]], str]:
    splits: dict[str, list[Row]] = {}
    unknown: Counter[str] = Counter()
    for row in rows:
        raw = str(row.split).strip() if row.split is not None else ""
        if not raw:
            skipped.append((row.id, "no split value"))
            continue
        name = SPLIT_NAMES.get(raw.lower())
        if name is None:
            unknown[raw] += 1
            continue
        row.split, row.group = name, name
        splits.setdefault(name, []).append(row)
    if unknown:
        raise DaamlabError(
            f"{where} has split values {sorted(unknown)} that are not train / validation / test "
            "(or training, valid, val, dev, testing): rename them"
        )
    if "test" not in splits and "validation" in splits:  # a train/validation release: test on validation
        splits["test"] = splits.pop("validation")
        for row in splits["test"]:
            row.split = row.group = "test"
    if "train" not in splits or "test" not in splits:
        raise DaamlabError(
            f"{where} has the splits {sorted(splits)}; it needs train and test (or validation): "
            "add them, or drop the split column/folders to get a random split (data.test_fraction)"
        )
    order = [s for s in ("train", "validation", "test") if s in splits]
    return {s: splits[s] for s in order}, "the data's own splits (" + ", ".join(
        f"{s} {len(splits[s])}" for s in order
    ) + ")"


# reader: row -> (the inputs it yields: one per chunk, or None, and the reason it was skipped)
Reader = Callable[[Row], tuple[list[Any] | None, str | None]]


class GenericSource:
    """A Source over an `Assignment`: items in listing order, chunks of one row sharing its id."""

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        where: str,
        assignment: Assignment,
        read: Reader,
        version_parts: Sequence[Any],
        count_items: Callable[[Row], int] | None = None,
    ) -> None:
        self.name, self.kind, self.where = name, kind, where
        self.class_names = assignment.class_names
        self._splits = assignment.splits
        self._read, self._count_items = read, count_items
        self._pending_skips = list(assignment.skipped)  # reported with the first split read
        # (id, reason) of every row not yielded; appended while items() runs (the cache records the
        # entries added during its pass); it only grows: iterating twice lists twice
        self.skipped: list[tuple[str, str]] = []
        self.class_counts: dict[str, dict[str, int]] = {}
        digest = hashlib.sha256(repr(list(version_parts)).encode())
        for split, rows in self._splits.items():
            for row in rows:
                digest.update(f"{split}|{row.group}|{row.id}|{row.label}".encode())
        self.version = f"{kind}-generic-1-{digest.hexdigest()[:16]}"
        log.info(
            "%s from %s: %d classes (%s); %s; %d row(s) skipped while listing",
            name,
            where,
            len(self.class_names),
            ", ".join(self.class_names),
            assignment.how,
            len(assignment.skipped),
        )

    def splits(self) -> list[str]:
        return list(self._splits)

    def _check_split(self, split: str) -> None:
        if split not in self._splits:
            raise DaamlabError(f"{self.name} has the splits {self.splits()}, not '{split}'")

    def num_items(self, split: str) -> int | None:
        self._check_split(split)
        if self._count_items is None:
            return len(self._splits[split])
        return sum(self._count_items(row) for row in self._splits[split])

    def items(self, split: str) -> Iterator[Item]:
        self._check_split(split)
        first_skip = len(self.skipped)
        self.skipped += self._pending_skips
        self._pending_skips = []
        counts: Counter[str] = Counter()
        for row in self._splits[split]:
            inputs, reason = self._read(row)
            if inputs is None:
                self.skipped.append((row.id, reason or "unreadable"))
                continue
            for number, value in enumerate(inputs):
                counts[row.label] += 1
                yield Item(id=row.id, group=row.group or split, label=row.label, input=value, chunk=number)
        self.class_counts[split] = {c: counts[c] for c in self.class_names}
        log.info(
            "%s %s items per class: %s",
            self.name,
            split,
            ", ".join(f"{c} {n}" for c, n in self.class_counts[split].items()),
        )
        report_skips(self.name, self.skipped[first_skip:])


def report_skips(name: str, skipped: Sequence[tuple[str, str]]) -> None:
    if not skipped:
        return
    reasons = Counter(reason for _, reason in skipped)
    shown = "; ".join(f"{item} ({reason})" for item, reason in skipped[:SHOWN_SKIPS])
    more = (
        f"; and {len(skipped) - SHOWN_SKIPS} more (all listed in the cache manifest)"
        if len(skipped) > SHOWN_SKIPS
        else ""
    )
    log.warning(
        "%s: skipped %d row(s) [%s]: %s%s",
        name,
        len(skipped),
        ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()),
        shown,
        more,
    )


# ---- tables: CSV, TSV, JSONL, parquet -> columns + rows of strings ----


def cell(value: Any) -> str | None:
    """A table cell as text (numbers and strings mixed in a column are all read as strings); None if empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def read_table(path: Path) -> tuple[list[str], list[dict[str, str | None]]]:
    """(columns, rows) of a CSV, TSV, JSONL or parquet file; every cell a string or None."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                columns = [c.strip() for c in reader.fieldnames or []]
                rows = [{c.strip(): cell(v) for c, v in record.items() if c is not None} for record in reader]
        elif suffix == ".jsonl":
            rows, columns = [], []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise DaamlabError(
                        f"{path}:{number} is not a JSON object; JSONL needs one object per line"
                    )
                for key in record:
                    if key not in columns:
                        columns.append(key)
                rows.append({k: cell(v) for k, v in record.items()})
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            columns = list(table.column_names)
            rows = [{k: cell(v) for k, v in record.items()} for record in table.to_pylist()]
        else:
            raise DaamlabError(
                f"{path}: a table must be .csv, .tsv, .jsonl or .parquet, not '{suffix or path.name}'"
            )
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as e:
        if isinstance(e, OSError) and not path.is_file():
            raise DaamlabError(
                f"data.path={path} does not exist: point it at a .csv, .tsv, .jsonl or .parquet file"
            ) from None
        raise DaamlabError(f"{path} could not be read as {suffix[1:]} ({str(e).splitlines()[0]})") from None
    return columns, rows


def require_columns(columns: Sequence[str], needed: Mapping[str, str | None], where: str) -> None:
    """needed: config key -> column name (None: not used)."""
    missing = [f"{key}={name}" for key, name in needed.items() if name and name not in columns]
    if missing:
        raise DaamlabError(
            f"{where} has no column for {', '.join(missing)} (columns found: {', '.join(columns) or 'none'}); "
            "set those data.* keys to the columns' names"
        )


# ---- folders: class-named subfolders (optionally under split folders) or a metadata table ----

METADATA_FILES = ("metadata.csv", "metadata.jsonl")


def is_hidden(relative: Path) -> bool:
    """.DS_Store, AppleDouble ._*, .git/...: any part of the path starting with a dot."""
    return any(part.startswith(".") for part in relative.parts)


def check_root(value: Any, what: str) -> Path:
    if not value:
        raise DaamlabError(
            f"data.root is not set: point it at your {what} folder (data.root=/path/to/folder)"
        )
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise DaamlabError(f"data.root={root} is not a folder: point it at your {what} folder")
    if not any(root.iterdir()):
        raise DaamlabError(
            f"data.root={root} is empty: put class-named subfolders (<label>/*) or a metadata.csv with "
            "file_name and label columns in it"
        )
    return root


def list_folder(root: Path, cfg: DictConfig) -> tuple[list[Row], list[tuple[str, str]], str]:
    """(rows, listing skips, layout) of a folder; a root metadata table wins over class folders."""
    metadata = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(metadata) > 1:
        raise DaamlabError(f"data.root={root} holds both {' and '.join(m.name for m in metadata)}: keep one")
    if metadata:
        return (*_list_metadata(root, metadata[0], cfg), f"{metadata[0].name}")
    return (*_list_class_folders(root), "class folders")


def _list_metadata(root: Path, table: Path, cfg: DictConfig) -> tuple[list[Row], list[tuple[str, str]]]:
    columns, records = read_table(table)
    label_column, split_column = cfg.get("label_column", "label"), cfg.get("split_column")
    group_column = cfg.get("group_column")
    require_columns(
        columns,
        {"file_name": "file_name", "data.label_column": label_column, "data.group_column": group_column},
        str(table),
    )
    if split_column and split_column not in columns:
        log.info("%s has no '%s' column: the data has no splits of its own", table, split_column)
        split_column = None
    names = Counter(r.get("file_name") for r in records if r.get("file_name"))
    duplicates = sorted(n for n, c in names.items() if c > 1)
    if duplicates:
        raise DaamlabError(
            f"{table} lists {len(duplicates)} file_name(s) more than once (e.g. {', '.join(duplicates[:3])}): "
            "each file needs one row"
        )
    rows, skipped = [], []
    for number, record in enumerate(records, start=2):  # line 1 is the header
        name = record.get("file_name")
        if not name:
            skipped.append((f"{table.name}:{number}", "no file_name"))
            continue
        relative = Path(name.strip())
        path = root / relative
        if is_hidden(relative):
            skipped.append((str(relative), "hidden file"))
        elif not path.is_file():
            skipped.append((str(relative), "listed file is missing"))
        else:
            rows.append(
                Row(
                    id=relative.as_posix(),
                    label=record.get(label_column),
                    ref=path,
                    split=record.get(split_column) if split_column else None,
                    group=record.get(group_column) if group_column else None,
                )
            )
    return rows, skipped


def _list_class_folders(root: Path) -> tuple[list[Row], list[tuple[str, str]]]:
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_folders = bool(top) and all(p.name.lower() in SPLIT_NAMES for p in top)
    bases = [(p, p.name) for p in top] if split_folders else [(root, None)]
    rows, skipped = [], []
    for base, split in bases:
        for path in sorted(base.rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(root)
            inner = path.relative_to(base)
            if is_hidden(relative):
                skipped.append((relative.as_posix(), "hidden file"))
            elif len(inner.parts) < 2:
                skipped.append((relative.as_posix(), "not inside a class folder"))
            else:
                rows.append(Row(id=relative.as_posix(), label=inner.parts[0], ref=path, split=split))
    if not rows:
        raise DaamlabError(
            f"data.root={root} holds no file inside a class folder: expected <label>/<file> "
            "(optionally under train/ validation/ test/), or a metadata.csv with file_name and label columns"
        )
    return rows, skipped


def file_stamp(rows: Sequence[Row]) -> list[tuple[str, int, int]]:
    """(id, size, mtime) of every listed file: a changed file changes the source version."""
    out = []
    for row in rows:
        stat = Path(row.ref).stat()
        out.append((row.id, stat.st_size, stat.st_mtime_ns))
    return out
