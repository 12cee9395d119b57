"""predictions.csv: one row per test row with the class probabilities, for error analysis,
confusion matrices and paired significance tests across variants (the rows line up across runs of
one protocol: same `row`, same item)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from daamlab.io import unreadable, write_text

COLUMNS = ("row", "id", "group", "label", "prediction")  # then p_<class> per class


def loader_rows(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The rows an unshuffled loader yields, in its order: each batch arrives sorted (sequential
    reads; ArrayDataset and RawDataset `__getitems__`)."""
    return np.concatenate([np.sort(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)])


def write_predictions(path: Path, dm, probs: Sequence[torch.Tensor]) -> None:
    """`dm`: the datamodule that fed the test loop; `probs`: (B, C) per batch as its test loader gave them."""
    p = torch.cat(list(probs)).numpy()  # (n, C)
    rows = loader_rows(dm.test_set.rows, dm.eval_batch_size)
    if len(rows) != len(p):
        raise RuntimeError(f"{len(p)} predictions for {len(rows)} test rows")
    split, class_names = dm.test_set.split, dm.data.class_names
    text = io.StringIO()
    out = csv.writer(text)
    out.writerow([*COLUMNS, *(f"p_{c}" for c in class_names)])
    for row, probs_row in zip(rows, p, strict=True):
        label, prediction = class_names[split.labels[row]], class_names[int(probs_row.argmax())]
        out.writerow(
            [int(row), split.ids[row], split.groups[row], label, prediction, *np.round(probs_row, 6)]
        )
    write_text(path, text.getvalue())


def read_predictions(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(the classes of its p_<class> columns, its rows); a file without the columns, or with a `row`
    that is not a whole number, is one error naming it."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("row", "label", "prediction") if c not in columns]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            rows = list(reader)
            for r in rows:
                int(r["row"])
    except (OSError, ValueError, TypeError, csv.Error) as e:
        raise unreadable(path, e) from None
    return [c.removeprefix("p_") for c in columns if c.startswith("p_")], rows
