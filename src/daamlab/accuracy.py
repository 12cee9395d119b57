"""A run's accuracy figure (accuracy.png): accuracy per epoch on the training and validation (or dev)
splits with the best epoch marked, beside the test recall of each class.

EpochHistory is the Lightning callback that keeps the per-epoch numbers whatever the loggers are
(logger=none included). Its state is saved in checkpoints, so a run resumed from last.ckpt draws
every epoch, not only those after the fault.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from daamlab.io import write_figure

FIGURE = "accuracy.png"
KEYS = ("train/acc", "train/loss", "val/acc", "val/loss")


class EpochHistory(L.Callback):
    """epoch -> {train/acc, train/loss, val/acc, val/loss}, as Lightning logged them for that epoch."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def _keep(self, trainer: L.Trainer, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        row = self.epochs.setdefault(trainer.current_epoch, {})
        for key in KEYS:
            if key.startswith(prefix) and key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])

    # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
    # module's, which is where val/acc is logged, so they would read the previous epoch's value
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep(trainer, "val/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._keep(trainer, "train/")

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": {epoch: dict(row) for epoch, row in self.epochs.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = {int(epoch): dict(row) for epoch, row in state_dict.get("epochs", {}).items()}


def class_recall(predictions: Path) -> dict[str, float]:
    """class -> the share of its test items predicted as it, from a run's predictions.csv."""
    with Path(predictions).open(newline="") as f:
        rows = list(csv.DictReader(f))
    classes = [c.removeprefix("p_") for c in (rows[0] if rows else {}) if c.startswith("p_")]
    recall = {}
    for c in classes:
        labelled = [r for r in rows if r["label"] == c]
        recall[c] = sum(r["prediction"] == c for r in labelled) / len(labelled) if labelled else float("nan")
    return recall


def save_accuracy_figure(
    out_dir: Path,
    epochs: dict[int, dict[str, float]],
    best_epoch: int,
    predictions: Path | None,
    val_name: str = "val",
    title: str = "",
) -> Path | None:
    """accuracy.png in out_dir; None when no epoch was recorded. `val_name`: what the validation split
    is (`dev` when data.dev_fraction > 0, `val (= test)` under the paper's protocol)."""
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = class_recall(predictions) if predictions is not None and predictions.is_file() else {}
    panels = 2 if recall else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(5 + 0.35 * len(recall) if recall else 5.5, 3.4), squeeze=False
    )
    ax = axes[0, 0]
    x = sorted(epochs)
    for key, label, style in (("train/acc", "train", "--"), ("val/acc", val_name, "-")):
        points = [(e, epochs[e][key]) for e in x if key in epochs[e]]
        if points:
            ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=label)
    if best_epoch in epochs and "val/acc" in epochs[best_epoch]:
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            f"best {epochs[best_epoch]['val/acc']:.3f}", (best_epoch, epochs[best_epoch]["val/acc"]),
            textcoords="offset points", xytext=(4, -12), fontsize=8,
        )  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "accuracy per epoch", fontsize=10)
    if recall:
        ax = axes[0, 1]
        names = list(recall)
        ax.bar(range(len(names)), [recall[c] for c in names], color="tab:green")
        ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("recall")
        mean = float(np.nanmean(list(recall.values())))
        ax.axhline(mean, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"test recall per class (mean {mean:.3f} = UAR)", fontsize=10)
    fig.tight_layout()
    path = Path(out_dir) / FIGURE
    write_figure(path, fig)
    plt.close(fig)
    return path
