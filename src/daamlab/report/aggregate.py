"""Runs -> sections (one per experiment x dataset) -> rows (one per variant), beside the paper's numbers.

Accuracies are in percent. A row's number is the mean over its folds/seeds of each run's best
validation accuracy (the paper's metric) with the **population** std (ddof=0), the convention most
of the paper's printed sigmas follow (docs/paper-vs-code.md, "Standard deviations"). The paper's
mean and std are shown as printed; Δ = ours - paper, only when the runs used the paper's dataset.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daamlab.errors import DaamlabError
from daamlab.report.collect import Run
from daamlab.results_table import mean_std

TEST_METRICS = ("acc", "uar", "f1")


def slug(text: str) -> str:
    """A file-name-safe form of a section title or a variant label (figure names)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "x"


@dataclass
class PaperRow:
    method: str
    table: str
    values: list[float]
    mean: float
    std: float | None  # None: the paper printed no std (Table 2e's 3-layer rows)
    ours: list[str] = field(default_factory=list)  # our variants that reproduce it (first: as published)
    pick: str | None = None  # IF ablation rows: high | low
    layers: str | None = None  # the paper's layer numbers, as printed


@dataclass
class PaperTable:
    experiment: str
    dataset: str
    tables: str
    runs: str  # folds | seeds
    rows: list[PaperRow]


def load_paper(path: Path) -> dict[str, dict[str, PaperTable]]:
    """experiments/paper_results.yaml -> {experiment: {dataset: PaperTable}}."""
    if not path.is_file():
        raise DaamlabError(f"{path} not found; pass --paper <paper_results.yaml> or --paper none")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise DaamlabError(
            f"{path} cannot be read as YAML ({type(e).__name__}); restore it, or pass --paper none"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("experiments"), dict):
        raise DaamlabError(
            f"{path} has no 'experiments' mapping: not a paper results file; pass --paper none"
        )
    out: dict[str, dict[str, PaperTable]] = {}
    try:
        for experiment, datasets in raw["experiments"].items():
            out[experiment] = {}
            for dataset, table in datasets.items():
                rows = []
                for r in table["rows"]:
                    if len(r["values"]) != len(table["run_names"]):
                        raise DaamlabError(
                            f"{path}: {experiment}/{dataset}/{r['method']} has a wrong number of values"
                        )
                    rows.append(
                        PaperRow(
                            method=r["method"],
                            table=str(r["table"]),
                            values=list(r["values"]),
                            mean=r["mean"],
                            std=r["std"],
                            ours=list(r.get("ours") or []),
                            pick=r.get("pick"),
                            layers=r.get("layers"),
                        )
                    )
                out[experiment][dataset] = PaperTable(
                    experiment, dataset, str(table["tables"]), table["runs"], rows
                )
    except (KeyError, TypeError, AttributeError) as e:  # a key missing, a value of the wrong kind
        raise DaamlabError(
            f"{path} is not a paper results file ({type(e).__name__}: {e}); restore it, or pass --paper none"
        ) from None
    return out


@dataclass
class Row:
    variant: str
    pick: str | None
    runs: list[Run]
    paper: PaperRow | None = None
    keys: dict[str, float] = field(default_factory=dict)  # run key (F1, s2, ...) -> best val acc (%)
    missing: list[str] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)  # a second complete run for a key: not counted

    @property
    def label(self) -> str:
        if self.pick is None:
            return self.variant
        layers = sorted({tuple(r.layers) for r in self.runs if r.layers is not None})
        shown = "; ".join(",".join(map(str, ls)) for ls in layers)
        return f"{self.variant} (layers {shown})" if shown else self.variant  # the variant names the pick

    @property
    def n(self) -> int:
        return len(self.keys)

    def val_acc(self) -> tuple[float, float] | None:
        return mean_std(list(self.keys.values())) if self.keys else None

    def test(self, metric: str) -> tuple[float, float] | None:
        values = [100 * r.test[metric] for r in self.runs if r.status == "complete" and metric in r.test]
        return mean_std(values) if values else None

    def params(self, kind: str) -> list[int]:
        return sorted({r.params[kind] for r in self.runs if kind in r.params})


@dataclass
class Section:
    experiment: str | None
    data: str | None
    rows: list[Row]
    keys: list[str]  # every run key the section expects
    paper: PaperTable | None = None
    compare: bool = False  # paper numbers are on this dataset: Δ is meaningful
    note: str = ""
    # apart from the runs on protocol: "search" (hparams_search trials, scored on dev), or the protocol
    # keys the section's runs changed ("trainer.max_epochs=2"; report/protocol.py)
    apart: str = ""

    @property
    def title(self) -> str:
        title = f"{self.experiment} · {self.data}" if self.experiment else str(self.data)
        if self.apart == "search":
            return f"{title} · search trials"
        return f"{title} · off-protocol: {self.apart}" if self.apart else title

    @property
    def slug(self) -> str:
        return slug(self.title.replace(" · ", "-"))

    def delta(self, row: Row) -> float | None:
        ours = row.val_acc()
        if not (self.compare and ours and row.paper):
            return None
        return ours[0] - row.paper.mean


_APART_NOTE = {
    "search": "Trials of a hyper-parameter search (hparams_search=optuna): best accuracy on the dev "
    "split, not comparable to test numbers; their best configuration re-runs as the `(tuned)` rows.",
    "off": "Off-protocol: these runs change keys their experiment (or modality) config fixes, named in "
    "the title; kept apart from the runs that follow it (daamlab/report/protocol.py).",
}


def run_key(run: Run, many_seeds: bool) -> str:
    if run.fold is None:
        return f"s{run.seed}"
    return f"F{run.fold}/s{run.seed}" if many_seeds else f"F{run.fold}"


def _sort_key(key: str) -> tuple:
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in key.split("/"))


def _paper_for(experiment: str | None, data: str | None, paper) -> tuple[PaperTable | None, bool, str]:
    tables = (paper or {}).get(experiment) if experiment else None
    if not tables:
        return None, False, ""
    if data in tables:
        return tables[data], True, ""
    if len(tables) == 1:
        table = next(iter(tables.values()))
        note = (
            f"These runs use data '{data}'; the paper's numbers are on '{table.dataset}' and are shown "
            "for reference only (no difference computed)."
        )
        return table, False, note
    return None, False, f"The paper has no numbers for data '{data}' in {experiment}."


def _matches(paper_row: PaperRow, row: Row) -> bool:
    if paper_row.pick is not None:
        return row.pick == paper_row.pick
    return row.pick is None and row.variant in paper_row.ours


def build_sections(runs: list[Run], paper: dict[str, dict[str, PaperTable]] | None) -> list[Section]:
    grouped: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        apart = "search" if run.search == "trial" else ", ".join(run.off_protocol)
        grouped[(run.experiment or "", run.data or "", apart)].append(run)
    sections = []
    order = lambda item: (item[0][0], item[0][1], item[0][2] == "search", item[0][2])  # trials last
    for (experiment, data, apart), section_runs in sorted(grouped.items(), key=order):
        many_seeds = len({r.seed for r in section_runs}) > 1 and any(r.fold is not None for r in section_runs)
        by_row: dict[tuple, list[Run]] = defaultdict(list)
        for run in section_runs:
            by_row[(run.variant, run.pick)].append(run)
        rows = []
        for (variant, pick), row_runs in by_row.items():
            row = Row(variant, pick, row_runs)
            for run in sorted(row_runs, key=lambda r: str(r.path)):
                if run.status != "complete":
                    continue
                key = run_key(run, many_seeds)
                if key in row.keys:
                    row.duplicates.append(run.path)
                else:
                    row.keys[key] = 100 * run.best_val_acc
            rows.append(row)
        table, compare, note = _paper_for(experiment or None, data or None, paper)
        if apart:  # not the paper's protocol: its numbers are no reference
            table, compare, note = None, False, _APART_NOTE["search" if apart == "search" else "off"]
        keys = {k for row in rows for k in row.keys} | {run_key(r, many_seeds) for r in section_runs}
        if table is not None and table.runs == "folds" and not many_seeds:
            keys |= {f"F{k}" for k in range(1, len(table.rows[0].values) + 1)}
        keys = sorted(keys, key=_sort_key)
        for row in rows:
            row.missing = [k for k in keys if k not in row.keys]
        sections.append(
            Section(experiment or None, data or None, _order(rows, table), keys, table, compare, note, apart)
        )
    return sections


def _order(rows: list[Row], table: PaperTable | None) -> list[Row]:
    """The paper's row order (a paper method nobody ran keeps an empty row), then our other variants."""
    ordered, used = [], set()
    for paper_row in table.rows if table else []:
        matched = [r for r in rows if _matches(paper_row, r) and id(r) not in used]
        rank = {v: i for i, v in enumerate(paper_row.ours)}
        matched.sort(key=lambda r: rank.get(r.variant, len(rank)))
        for r in matched:
            r.paper = paper_row
            used.add(id(r))
        ordered.extend(matched or [Row(variant="", pick=paper_row.pick, runs=[], paper=paper_row)])
    ordered.extend(sorted((r for r in rows if id(r) not in used), key=lambda r: (r.variant, r.pick or "")))
    return ordered


def summary(runs: list[Run]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        counts[run.status] += 1
    return dict(counts)
