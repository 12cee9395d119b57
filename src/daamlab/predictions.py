"""predictions.csv: one row per test row with the class probabilities, for error analysis,
confusion matrices and paired significance tests across variants (the rows line up across runs of
one protocol: same `row`, same item)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def loader_rows(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The rows an unshuffled loader yields, in its order: each batch arrives sorted (sequential
    reads; ArrayDataset and RawDataset `__getitems__`)."""
    return np.concatenate([np.sort(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)])


def write_predictions(
    path: Path, dataset, batch_size: int, probs: Sequence[torch.Tensor], class_names: Sequence[str]
) -> None:
    """`dataset`: the test set (its split and rows); `probs`: (B, C) per batch as the loader gave them."""
    p = torch.cat(list(probs)).numpy()  # (n, C)
    rows = loader_rows(dataset.rows, batch_size)
    if len(rows) != len(p):
        raise RuntimeError(f"{len(p)} predictions for {len(rows)} test rows")
    split = dataset.split
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", "id", "group", "label", "prediction", *(f"p_{c}" for c in class_names)])
        for row, probs_row in zip(rows, p, strict=True):
            label, prediction = class_names[split.labels[row]], class_names[int(probs_row.argmax())]
            out.writerow(
                [int(row), split.ids[row], split.groups[row], label, prediction, *np.round(probs_row, 6)]
            )
        tmp = f.name
    os.replace(tmp, path)
