"""The short results table train.py prints: one run at its end, and every job of a sweep at the sweep's end.

Reads only what runs wrote (metrics.json), so a sweep's table is the same whether its jobs ran in
this process, in joblib workers or on SLURM. A sweep groups its runs by modality and variant (the
record's name for it: `mhsa_paper[layer=22]`, `daam (tuned)`) and gives the test accuracy as mean +- std
over the folds / seeds that ran; a search's trials are listed apart, one row each.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from daamlab import rundir
from daamlab.errors import DaamlabError
from daamlab.record import RunRecord

COLUMNS = ("modality", "variant", "runs", "test acc", "test uar", "best val acc", "head params")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0): the convention of the paper's σ, the report and this table."""
    if not values:
        raise ValueError("mean_std of no values")
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=0))


def _pm(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return "{:.4f} +- {:.4f}".format(*mean_std(values))


def _text_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return [line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def results_table(runs: list[RunRecord]) -> str:
    """A fixed-width text table: one row per (modality, variant), in the order first seen."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(str(run.modality), str(run.variant or run.attention))].append(run)
    rows = []
    for (modality, variant), members in groups.items():
        tested = [m for m in members if m.test]
        params = members[0].params
        rows.append(
            (
                modality,
                variant,
                str(len(members)),
                _pm([m.test["acc"] for m in tested]) if tested else "-",
                _pm([m.test["uar"] for m in tested]) if tested and "uar" in tested[0].test else "-",
                _pm([m.best_val_acc for m in members]),
                f"{params.get('attention', 0):,} / {params.get('trainable', 0):,}",
            )
        )
    out = _text_table(COLUMNS, rows)
    return "\n".join(out) + "\n(head params: attention / all trainable; mean +- std over the runs)"


def trials_table(trials: list[RunRecord]) -> str:
    """A search's trials, one row each, best dev accuracy first within a variant: each trial is one
    configuration, scored on the split it validated on; their test numbers are not the result."""
    order = sorted(trials, key=lambda r: (str(r.attention), -(r.best_val_acc or 0.0)))
    rows = [
        (str(r.modality), str(r.variant), f"{r.best_val_acc:.4f}", f"{r.best_epoch}", f"{r.epochs}")
        for r in order
    ]
    out = _text_table(("modality", "trial", "best dev acc", "best epoch", "epochs"), rows)
    return "\n".join(out) + "\n(fewer epochs than the others: pruned; the best re-runs as the (tuned) rows)"


def sweep_records(root: Path) -> list[tuple[Path, RunRecord | None]]:
    """(job folder, its record or None) for every job folder under root: those holding a config.yaml,
    a metrics.json, or only the lock of a job another process trains."""
    names = (rundir.CONFIG, rundir.METRICS, rundir.LOCK)
    jobs = sorted({p.parent for name in names for p in root.rglob(name)})
    return [(job, _read(job / rundir.METRICS)) for job in jobs]


def _read(path: Path) -> RunRecord | None:
    """A job's record; one that cannot be read (damaged, foreign) counts as failed, with why."""
    if not path.is_file():
        return None
    try:
        return RunRecord.read(path)
    except DaamlabError as e:
        return RunRecord(status="failed", error=" ".join(str(e).split()))


def complete_runs(root: Path) -> list[RunRecord]:
    """The record of every complete run under root (a sweep directory), in path order."""
    return [r for _, r in sweep_records(root) if r is not None and r.status == "complete"]


class SweepTable(Callback):
    """Hydra callback: after a multirun, print the table of the sweep's runs and a summary of its jobs
    (complete, failed, skipped as already complete, incomplete: killed, or being trained by another
    process, i.e. its lock is held); exit 2 if any job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        jobs = sweep_records(root)
        complete = [r for _, r in jobs if r is not None and r.status == "complete"]
        failed = [(job, r) for job, r in jobs if r is not None and r.status == "failed"]
        started = getattr(self, "started", float("inf"))
        skipped = sum(
            r.status == "complete" and (job / rundir.METRICS).stat().st_mtime < started
            for job, r in jobs
            if r
        )
        incomplete = [job for job, r in jobs if r is None]
        elsewhere = sum(rundir.trained_elsewhere(job) for job in incomplete)
        trials = [r for r in complete if r.search_role == "trial"]
        results = [r for r in complete if r.search_role != "trial"]
        if trials:
            print(f"\nsearch trials ({len(trials)}) in {root}:\n{trials_table(trials)}")
        if results:
            runs = f"{len(results)} run" + ("s" if len(results) > 1 else "")
            print(f"\nresults of {runs} in {root}:\n{results_table(results)}")
        print(
            f"\nsweep {root}: {len(complete)} complete ({skipped} of them skipped: finished before this sweep"
            + (f"; {len(trials)} search trials" if trials else "")
            + f"), {len(failed)} failed, {len(incomplete)} incomplete"
            + (f" ({elsewhere} being trained by another process)" if elsewhere else "")
        )
        for job, record in failed:
            print(f"  failed: {job.name}: {record.error}")
        if failed:
            raise SystemExit(2)
