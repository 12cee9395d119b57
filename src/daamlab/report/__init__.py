"""The report: run directories -> the paper's tables (markdown + CSV) beside its numbers, and figures.

    python -m daamlab.report outputs/train/multiruns/paper_iemocap [more dirs] [--out DIR]

Reads only run directories (metrics.json, config.yaml, gates.npy) and experiments/paper_results.yaml;
no W&B. Lists failed and incomplete runs, and sweep jobs that never started.
"""

from __future__ import annotations

from pathlib import Path

from daamlab.io import write_text
from daamlab.report.aggregate import build_sections, load_paper, mean_std
from daamlab.report.collect import collect
from daamlab.report.figures import accuracy_figure, importance_figure
from daamlab.report.render import report_markdown, write_csv

PAPER_RESULTS = Path(__file__).resolve().parents[3] / "experiments" / "paper_results.yaml"


def build_report(paths: list[Path], out_dir: Path, paper_path: Path | None = PAPER_RESULTS) -> Path:
    """Write report.md, report.csv and the PNG figures into out_dir; returns report.md's path."""
    runs, never_ran = collect(paths)
    sections = build_sections(runs, load_paper(paper_path) if paper_path else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, Path]] = {}
    for section in sections:
        figs = figures.setdefault(section.slug, {})
        acc = accuracy_figure(section, out_dir / f"accuracy_{section.slug}.png")
        if acc:
            figs["accuracy"] = acc
        for i, row in enumerate(r for r in section.rows if r.runs):
            imp = importance_figure(section, row, out_dir / f"importance_{section.slug}_{i}.png")
            if imp:
                figs[f"Importance Factor: {row.label}"] = imp
    write_csv(sections, out_dir / "report.csv")
    report = out_dir / "report.md"
    write_text(report, report_markdown(sections, runs, never_ran, figures, out_dir))  # a full disk keeps the old one
    return report


__all__ = ["build_report", "build_sections", "collect", "load_paper", "mean_std"]
