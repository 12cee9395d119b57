"""The report: run directories -> the paper's tables (markdown + CSV) beside its numbers, and figures.

    python -m daamlab.report outputs/train/multiruns/paper_iemocap [more dirs] [--out DIR]

Reads only run directories (metrics.json, config.yaml, gates.npy) and experiments/paper_results.yaml;
no W&B. Lists failed and incomplete runs, and sweep jobs that never started.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from daamlab.errors import DaamlabError
from daamlab.io import write_text
from daamlab.report.aggregate import build_sections, load_paper, mean_std, slug
from daamlab.report.collect import collect
from daamlab.report.figures import accuracy_figure, confusion_figure, importance_figure
from daamlab.report.render import report_markdown, write_csv, write_paired_csv

PAPER_RESULTS = Path(__file__).resolve().parents[3] / "experiments" / "paper_results.yaml"
REPORT_FILES = {".md", ".csv", ".png"}  # all a report folder holds: anything else is not ours to replace


def build_report(paths: list[Path], out_dir: Path, paper_path: Path | None = PAPER_RESULTS) -> Path:
    """Write report.md, report.csv, paired.csv and the PNG figures as out_dir, replacing the
    previous report as a whole; returns report.md's path."""
    runs, never_ran = collect(paths)
    sections = build_sections(runs, load_paper(paper_path) if paper_path else None)
    _check_replaceable(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"  # a sibling: the swap is a rename
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write(sections, runs, never_ran, tmp)
        _swap(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "report.md"


def _write(sections, runs, never_ran, out_dir: Path) -> None:
    figures: dict[str, dict[str, Path]] = {}
    for section in sections:  # figure names: <kind>_<section>_<variant>.png
        figs = figures.setdefault(section.slug, {})
        acc = accuracy_figure(section, out_dir / f"accuracy_{section.slug}.png")
        if acc:
            figs["accuracy"] = acc
        for row in (r for r in section.rows if r.runs):
            name = f"{section.slug}_{slug(row.label)}.png"
            imp = importance_figure(section, row, out_dir / f"importance_{name}")
            if imp:
                figs[f"Importance Factor: {row.label}"] = imp
            confusion = confusion_figure(section, row, out_dir / f"confusion_{name}")
            if confusion:
                figs[f"Confusion matrix: {row.label}"] = confusion
    write_csv(sections, out_dir / "report.csv")
    write_paired_csv(sections, out_dir / "paired.csv")
    write_text(out_dir / "report.md", report_markdown(sections, runs, never_ran, figures, out_dir))


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    foreign = [p.name for p in out_dir.iterdir() if p.is_dir() or p.suffix not in REPORT_FILES]
    if not out_dir.is_dir() or foreign:
        raise DaamlabError(
            f"--out {out_dir} holds more than a report ({', '.join(sorted(foreign)[:3]) or 'not a folder'}); "
            "the report replaces its folder as a whole: give an empty or a report folder"
        )


def _swap(new: Path, out_dir: Path) -> None:
    """The old report out of the way, the new one in its place: two renames, never a mix of both."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_report", "build_sections", "collect", "load_paper", "mean_std"]
