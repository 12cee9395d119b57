"""PNG figures for the report (matplotlib, Agg): accuracy per variant, and Importance Factor heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daamlab.importance import plot_importance
from daamlab.io import read_array, write_figure
from daamlab.predictions import read_predictions
from daamlab.report.aggregate import Row, Section


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(section: Section, path: Path) -> Path | None:
    """Ours (circles, mean ± population std) beside the paper's printed mean ± std (diamonds)."""
    rows = [r for r in section.rows if r.val_acc() is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))
    means, stds = zip(*(r.val_acc() for r in rows), strict=True)
    ax.errorbar(means, y - 0.12, xerr=stds, fmt="o", color="tab:blue", capsize=3, label="ours")
    with_paper = [(i, r.paper) for i, r in enumerate(rows) if r.paper is not None]
    if with_paper:
        idx, paper = zip(*with_paper, strict=True)
        ax.errorbar(
            [p.mean for p in paper],
            np.array(idx) + 0.12,
            xerr=[p.std or 0.0 for p in paper],
            fmt="D",
            color="black",
            capsize=3,
            label="paper" if section.compare else f"paper ({section.paper.dataset}, reference)",
        )
    ax.set_yticks(y, [r.label for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("best validation accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(section.title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def importance_figure(section: Section, row: Row, path: Path) -> Path | None:
    """IF of the gates averaged over the row's runs (the paper averages the maps, then applies IF)."""
    gates = [read_array(r.gates) for r in row.runs if r.status == "complete" and r.gates is not None]
    if not gates or len({g.shape for g in gates}) != 1:
        return None
    layers = row.runs[0].layers
    title = f"{section.title}: {row.label} (IF, {len(gates)} run{'s' if len(gates) > 1 else ''})"
    plot_importance(np.mean(gates, axis=0), path, layers, title)
    return path


def if_vs_occlusion_figure(
    title: str,
    if_layers: np.ndarray,
    occlusion: np.ndarray,
    rho: float,
    path: Path,
    integrated_gradients: np.ndarray | None = None,
) -> Path:
    """A row's mean IF per layer beside its occlusion NLL increase per layer and, where computed,
    its integrated gradients per layer (means over its runs)."""
    plt = _pyplot()
    n, panels = len(if_layers), 2 + (integrated_gradients is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.5 * panels, 0.2 * n + 1.8), sharey=True)
    y = np.arange(n)
    axes[0].barh(y, if_layers, color="tab:green")
    axes[0].set_xlim(0, 1)  # the IF's own range
    axes[0].set_xlabel("mean IF")
    axes[1].barh(y, occlusion, color="tab:red")
    axes[1].set_xlabel("occlusion: validation NLL increase")
    if integrated_gradients is not None:
        axes[2].barh(y, integrated_gradients, color="tab:purple")
        axes[2].set_xlabel("integrated gradients: log p(true class)")
    for ax in axes[1:]:
        ax.axvline(0, color="grey", linewidth=0.8)
    axes[0].set_ylabel("layer (row of the cached stack)")
    fig.suptitle(f"{title}: Spearman (IF, occlusion) {rho:+.2f}", fontsize=10)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def confusion_figure(section: Section, row: Row, path: Path) -> Path | None:
    """The row's confusion matrix, summed over its runs' predictions.csv, each true class's row
    normalised to 1 (the counts are printed in the cells)."""
    counts: dict[tuple[str, str], int] = {}
    classes: list[str] = []
    runs = 0
    for run in row.runs:
        path_csv = run.path / "predictions.csv"
        if run.status != "complete" or not path_csv.is_file():
            continue
        run_classes, rows = read_predictions(path_csv)
        classes = classes or run_classes
        for r in rows:
            counts[(r["label"], r["prediction"])] = counts.get((r["label"], r["prediction"]), 0) + 1
        runs += 1
    if not runs:
        return None
    m = np.array([[counts.get((t, p), 0) for p in classes] for t in classes], dtype=np.float64)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    plt = _pyplot()
    side = 1.0 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 20:  # beyond that (CIFAR-100) the numbers are unreadable; the colours remain
        for i, j in np.ndindex(m.shape):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{section.title}: {row.label} ({runs} run{'s' if runs > 1 else ''})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
