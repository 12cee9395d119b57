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
MARKER = ".daamlab-report"  # written into every report folder: only a folder holding it is replaced


def build_report(paths: list[Path], out_dir: Path, paper_path: Path | None = PAPER_RESULTS) -> Path:
    """Write report.md, report.csv, paired.csv and the PNG figures as out_dir, replacing the
    previous report as a whole; returns report.md's path."""
    runs, never_ran = collect(paths)
    sections = build_sections(runs, load_paper(paper_path) if paper_path else None)
    _check_replaceable(out_dir)
    _remove_leftovers(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"  # a sibling: the swap is a rename
    try:
        tmp.mkdir(parents=True)
        _write(sections, runs, never_ran, tmp)
        write_text(tmp / MARKER, "a report folder written by python -m daamlab.report; replaced whole\n")
        _swap(tmp, out_dir)
    except OSError as e:
        raise DaamlabError(
            f"cannot write the report to --out {out_dir}: {e.strerror or e}; give --out a folder you may "
            "write on a disk with space (the previous report, if any, is unchanged)"
        ) from None
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
    """Only an empty folder, or one an earlier report wrote (its marker) holding nothing else, is
    replaced: a folder of the user's own .md/.csv/.png files, or a run's, is not ours."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DaamlabError(f"--out {out_dir} is a file; give an empty folder or a report folder")
    entries = list(out_dir.iterdir())
    foreign = [p.name for p in entries if p.name != MARKER and (p.is_dir() or p.suffix not in REPORT_FILES)]
    if foreign or (entries and not (out_dir / MARKER).is_file() and not _older_report(out_dir)):
        what = ", ".join(sorted(foreign)[:3]) if foreign else f"files, and no {MARKER} of an earlier report"
        raise DaamlabError(
            f"--out {out_dir} is not a report folder (it holds {what}); the report replaces its folder "
            "as a whole: give an empty folder, a new one, or one an earlier report wrote"
        )


def _older_report(out_dir: Path) -> bool:
    """A report folder written before the marker existed: its report.md opens with the report's title."""
    try:
        return (out_dir / "report.md").read_text().startswith("# daamlab report\n")
    except (OSError, UnicodeDecodeError):
        return False


def _remove_leftovers(out_dir: Path) -> None:
    """The temp and old folders a killed report left beside out_dir (their process is gone)."""
    for path in out_dir.parent.glob(f".{out_dir.name}.*-*"):
        kind, _, pid = path.name.removeprefix(f".{out_dir.name}.").partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap(new: Path, out_dir: Path) -> None:
    """The old report out of the way, the new one in its place: two renames, never a mix of both."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_report", "build_sections", "collect", "load_paper", "mean_std"]
