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

from daamlab.io import write_text


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
    out.writerow(["row", "id", "group", "label", "prediction", *(f"p_{c}" for c in class_names)])
    for row, probs_row in zip(rows, p, strict=True):
        label, prediction = class_names[split.labels[row]], class_names[int(probs_row.argmax())]
        out.writerow(
            [int(row), split.ids[row], split.groups[row], label, prediction, *np.round(probs_row, 6)]
        )
    write_text(path, text.getvalue())
