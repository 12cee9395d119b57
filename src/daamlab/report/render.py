"""Sections -> report.md (the paper's layout, one table per experiment x dataset) and report.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from daamlab.io import read_array, read_json_object, unreadable, write_text
from daamlab.report.aggregate import TEST_METRICS, Row, Section, slug
from daamlab.report.collect import Run
from daamlab.report.stats import Comparison, PairedResult, section_comparisons

STD_NOTE = (
    "Accuracy in %. Ours: mean ± std over folds/seeds of each run's best validation accuracy (the "
    "paper's metric); std is the population std (ddof=0), the convention most of the paper's σ follow "
    "(docs/paper-vs-code.md, 'Standard deviations'). Paper: μ ± σ as printed. Δ = ours − paper, in points. Test metrics: the "
    "best-validation checkpoint on the test split (the same split as validation under the paper's protocol)."
)


def _pm(value: tuple[float, float] | None, n: int | None = None) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.2f}"


def _params(row: Row, kind: str) -> str:
    values = row.params(kind)
    if not values:
        return "—"
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}–{values[-1]:,}"


def _paper_cell(row: Row) -> str:
    if row.paper is None:
        return "—"
    return f"{row.paper.mean:.1f}" if row.paper.std is None else f"{row.paper.mean:.1f} ± {row.paper.std:.2f}"


def _delta(section: Section, row: Row) -> str:
    d = section.delta(row)
    return "—" if d is None else f"{d:+.1f}"


def section_markdown(section: Section, figures: dict[str, Path], out_dir: Path) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.paper:
        lines.append(f"Paper: Table {section.paper.tables} ({section.paper.dataset}).")
    if section.note:
        lines.append(section.note)
    lines.append("")
    header = ["paper method", "variant", *section.keys, "ours", "paper", "Δ"]
    header += [f"test {m}" for m in TEST_METRICS] + ["attention params", "trainable params", "n"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in section.rows:
        if not row.runs:  # a paper method nobody ran
            cells = [row.paper.method, "(not run)", *["" for _ in section.keys], "—", _paper_cell(row), "—"]
            cells += ["—"] * len(TEST_METRICS) + ["—", "—", "0"]
        else:
            cells = [row.paper.method if row.paper else "", row.label]
            cells += [f"{row.keys[k]:.1f}" if k in row.keys else "" for k in section.keys]
            cells += [_pm(row.val_acc(), row.n), _paper_cell(row), _delta(section, row)]
            cells += [_pm(row.test(m), row.n) for m in TEST_METRICS]
            cells += [_params(row, "attention"), _params(row, "trainable"), str(row.n)]
        lines.append("| " + " | ".join(cells) + " |")
    gaps = [f"{row.label}: {', '.join(row.missing)}" for row in section.rows if row.runs and row.missing]
    if gaps:
        lines += ["", "Missing runs (no complete metrics.json): " + "; ".join(gaps) + "."]
    dups = [f"{row.label}: {', '.join(map(str, row.duplicates))}" for row in section.rows if row.duplicates]
    if dups:
        lines += ["", "Duplicate runs, not counted: " + "; ".join(dups) + "."]
    if section.apart != "search":  # trials are one configuration each: nothing to pair
        lines += paired_markdown(section_comparisons(section.rows))
    for name, path in figures.items():
        lines += ["", f"![{name}]({path.relative_to(out_dir)})"]
    return lines + [""]


IF_VS_OCCLUSION_NOTE = (
    "Per gated run: Spearman's rank correlation between the Importance Factor's per-layer mean "
    "(gates.npy) and the occlusion importance (layer_importance.npy: the increase in validation NLL "
    "when one layer's features are replaced by their training mean), and, where the run computed "
    "them (ig_steps > 0), the integrated gradients per layer (layer_importance.json: each layer's "
    "share of log p(true class) from the same baseline). Near +1: the IF ranks layers as the model "
    "uses them; near 0 or negative: it does not. ρ: mean ± std over the row's runs (each run's ρ "
    "beside it); top 3: layers of the curves averaged over the runs."
)


def _top3(values: np.ndarray, layers: list[int]) -> str:
    return ", ".join(str(layers[i]) for i in np.argsort(-values, kind="stable")[:3])


def _rho_cell(rhos: list[float]) -> str:
    return f"{np.nanmean(rhos):+.2f}" + (f" ± {np.nanstd(rhos):.2f}" if len(rhos) > 1 else "")


def _importance_curves(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """A complete gated run's (IF per layer, occlusion NLL increase, integrated gradients or None)."""
    from daamlab.layer_importance import ARRAY, SUMMARY, if_per_layer

    if run.status != "complete" or run.gates is None or not (run.path / ARRAY).is_file():
        return None
    gates, occlusion = if_per_layer(read_array(run.gates)), read_array(run.path / ARRAY)
    summary = run.path / SUMMARY
    ig = read_json_object(summary).get("ig") if summary.is_file() else None
    if ig is not None:
        try:
            ig = np.asarray(ig, dtype=np.float64)
        except (TypeError, ValueError):
            raise unreadable(summary, ValueError("its 'ig' is not a list of numbers")) from None
        ig = ig if ig.shape == occlusion.shape else None
    return (gates, occlusion, ig) if gates.shape == occlusion.shape else None


def if_vs_occlusion_markdown(sections: list[Section], out_dir: Path) -> list[str]:
    """The IF beside the occlusion importance (and integrated gradients) for every gated run that
    saved them, with a figure per row."""
    from daamlab.layer_importance import spearman
    from daamlab.report.figures import if_vs_occlusion_figure

    table, figures = [], []
    for section in sections:
        for row in section.rows:
            curves = [c for c in map(_importance_curves, row.runs) if c is not None]
            if not curves:
                continue
            rhos = [spearman(g, occ) for g, occ, _ in curves]
            mean_if, mean_occ = np.mean([c[0] for c in curves], 0), np.mean([c[1] for c in curves], 0)
            with_ig = [(g, ig) for g, _, ig in curves if ig is not None]
            mean_ig = np.mean([ig for _, ig in with_ig], 0) if with_ig else None
            layers = row.runs[0].layers or list(range(len(mean_if)))
            cells = [section.title, row.label, _rho_cell(rhos), ", ".join(f"{r:+.2f}" for r in rhos)]
            cells += [_top3(mean_if, layers), _top3(mean_occ, layers)]
            if with_ig:
                cells += [_rho_cell([spearman(g, ig) for g, ig in with_ig]), _top3(mean_ig, layers)]
            else:
                cells += ["—", "—"]
            table.append("| " + " | ".join(cells) + " |")
            path = out_dir / f"if_vs_occlusion_{section.slug}_{slug(row.label)}.png"
            title = f"{section.title}: {row.label}"
            rho = float(np.nanmean(rhos))
            figures.append((title, if_vs_occlusion_figure(title, mean_if, mean_occ, rho, path, mean_ig)))
    if not table:
        return []
    lines = ["## Importance Factor vs occlusion", "", IF_VS_OCCLUSION_NOTE, ""]
    lines += [
        "| section | variant | Spearman ρ | ρ per run | top 3 by IF | top 3 by occlusion | ρ (IF, IG) | top 3 by IG |",
        "|" + "---|" * 8,
    ]
    lines += table
    for title, path in figures:
        lines += ["", f"![IF vs occlusion: {title}]({path.relative_to(out_dir)})"]
    return lines + [""]


PAIRED_NOTE = (
    "Test accuracy in %, A − B. Runs: mean over folds of the per-fold difference (seeds averaged "
    "within a fold; without folds, per seed), 95% t interval, exact two-sided sign-flip p (with n "
    "units it cannot go below 2/2^n); items: paired bootstrap over test items, resampled within each "
    "fold (10,000 times). The tests assume that, were A and B equally good, each fold's (or seed's) "
    "difference and each item's would be as likely negative as positive, independently of the others; "
    "they ignore that under the paper's protocol the checkpoint was chosen on these same test items. "
    "Holm: each test's p adjusted (Holm–Bonferroni) over this section's pairs; read it when asking "
    "whether any of the pairs differs."
)


def _interval(r: PairedResult) -> str:
    return "—" if r.low is None else f"[{r.low:+.2f}, {r.high:+.2f}]"


def paired_markdown(comparisons: list[Comparison]) -> list[str]:
    """The "Paired comparisons" table of a section (report/stats.py), or nothing with one variant."""
    if not comparisons:
        return []
    header = [
        "A",
        "B",
        "Δ runs",
        "95% CI",
        "p (sign-flip)",
        "Holm",
        "n",
        "Δ items",
        "95% CI",
        "p (bootstrap)",
        "Holm",
        "items",
    ]
    lines = ["", "### Paired comparisons", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in comparisons:
        cells = [c.a, c.b, f"{c.runs.mean:+.2f}", _interval(c.runs), f"{c.runs.p:.3g}"]
        cells += [f"{c.runs.p_holm:.3g}", str(c.runs.n)]
        if c.items is not None:
            cells += [f"{c.items.mean:+.2f}", _interval(c.items), f"{c.items.p:.3g}", f"{c.items.p_holm:.3g}"]
            cells.append(str(c.items.n))
        else:
            cells += ["—", "—", "—", "—", c.note or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", PAIRED_NOTE]


def report_markdown(
    sections: list[Section],
    runs: list[Run],
    never_ran: list[tuple[Path, str]],
    figures: dict[str, dict[str, Path]],
    out_dir: Path,
) -> str:
    counts = {s: sum(r.status == s for r in runs) for s in ("complete", "failed", "incomplete")}
    lines = [
        "# daamlab report",
        "",
        f"{len(runs)} run directories: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['incomplete']} incomplete; {len(never_ran)} sweep jobs never started.",
        "",
        STD_NOTE,
        "",
    ]
    for section in sections:
        lines += section_markdown(section, figures.get(section.slug, {}), out_dir)
    lines += if_vs_occlusion_markdown(sections, out_dir)
    bad = [r for r in runs if r.status != "complete"]
    if bad:
        lines += ["## Failed or incomplete runs", ""]
        lines += [f"- `{r.path}`: {r.status}" + (f" ({r.error})" if r.error else "") for r in bad]
        lines.append("")
    if never_ran:
        lines += ["## Sweep jobs that never started", ""]
        lines += [f"- `{sweep}`: `{job}`" for sweep, job in never_ran]
        lines.append("")
    return "\n".join(lines)


PAIRED_FIELDS = ["section", "a", "b", "test", "mean", "low", "high", "p", "p_holm", "n"]


def write_paired_csv(sections: list[Section], path: Path) -> None:
    """paired.csv: the paired comparisons of every section, one row per pair and test (runs, items)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAIRED_FIELDS)
        writer.writeheader()
        for section in sections:
            if section.apart == "search":
                continue
            for c in section_comparisons(section.rows):
                for test, r in (("runs", c.runs), ("items", c.items)):
                    if r is not None:
                        writer.writerow({
                            "section": section.title, "a": c.a, "b": c.b, "test": test, "mean": _num(r.mean),
                            "low": _num(r.low), "high": _num(r.high), "p": _num(r.p), "p_holm": _num(r.p_holm),
                            "n": r.n,
                        })  # fmt: skip


CSV_FIELDS = [
    "experiment", "data", "variant", "pick", "paper_method", "paper_table", "n", "missing",
    "val_acc_mean", "val_acc_std", "paper_mean", "paper_std", "delta",
    *[f"test_{m}_{s}" for m in TEST_METRICS for s in ("mean", "std")],
    "params_attention", "params_trainable", "runs",
]  # fmt: skip


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def write_csv(sections: list[Section], path: Path) -> None:
    f = io.StringIO(newline="")  # written whole through daamlab.io's atomic writer below
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for section in sections:
        for row in section.rows:
            val = row.val_acc()
            record = {
                "experiment": section.experiment or "",
                "data": section.data or "",
                "variant": row.label if row.runs else "",
                "pick": row.pick or "",
                "paper_method": row.paper.method if row.paper else "",
                "paper_table": row.paper.table if row.paper else "",
                "n": row.n,
                "missing": " ".join(row.missing),
                "val_acc_mean": _num(val[0] if val else None),
                "val_acc_std": _num(val[1] if val else None),
                "paper_mean": _num(row.paper.mean if row.paper else None),
                "paper_std": _num(row.paper.std if row.paper else None),
                "delta": _num(section.delta(row)),
                "params_attention": " ".join(map(str, row.params("attention"))),
                "params_trainable": " ".join(map(str, row.params("trainable"))),
                "runs": " ".join(f"{k}={v:.4f}" for k, v in row.keys.items()),
            }
            for m in TEST_METRICS:
                t = row.test(m)
                record[f"test_{m}_mean"], record[f"test_{m}_std"] = _num(t and t[0]), _num(t and t[1])
            writer.writerow(record)
    write_text(path, f.getvalue())
