"""What a run sends to its experiment trackers beyond Lightning's per-epoch metrics.

Every logger gets the resolved config and the parameter counts (W&B: the run's config; CSV:
hparams.yaml). W&B also gets the final numbers in its run summary and the run's figures as images.
Nothing here imports wandb: with `logger=csv` it is never loaded.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab.record import RunRecord


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed run keeps its history.

    Lightning deletes metrics.csv when a logger starts in a directory that has one, so a run resumed
    from last.ckpt would lose the epochs before the fault. This one reads the old rows first and,
    once the resumed run logs its first epoch, writes back those of earlier epochs (later ones, if a
    kill came between logging and checkpointing, are logged again by the resumed run).
    """

    _previous: list[dict[str, str]] | None = None

    @property
    def experiment(self):
        if self._experiment is None:
            path = Path(self.log_dir) / "metrics.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    self._previous = list(csv.DictReader(f))
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._previous is not None and "epoch" in metrics:
            first = float(metrics["epoch"])
            kept = [row for row in self._previous if row.get("epoch") and float(row["epoch"]) < first]
            self.experiment.metrics[:0] = kept
            self._previous = None
        super().log_metrics(metrics, step)


def job_type(fold: int | None, seed: int) -> str:
    """W&B job_type: runs of one sweep group side by side by fold (IEMOCAP) or by seed (the others)."""
    return f"fold{fold}-seed{seed}" if fold is not None else f"seed{seed}"


def log_config(loggers: list[Logger], cfg: DictConfig, params: dict[str, int]) -> None:
    hparams = {**OmegaConf.to_container(cfg, resolve=True), "params": params}
    for logger in loggers:
        logger.log_hyperparams(hparams)


def log_results(loggers: list[Logger], record: RunRecord, figures: dict[str, Path]) -> None:
    summary = {
        "best_val_acc": record.best_val_acc,
        "best_epoch": record.best_epoch,
        **{f"params/{k}": v for k, v in record.params.items()},
        **{f"test/{k}": v for k, v in record.test.items()},
    }
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(summary)
            for key, path in figures.items():
                logger.log_image(key=key, images=[str(path)])
