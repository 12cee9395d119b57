"""Paired statistics for "is variant A better than variant B?" (pure numpy/scipy; the report's
"Paired comparisons" table).

Two tests, both paired (the same folds, seeds and test items for both variants):

- over runs: per-run accuracy differences A - B. Several seeds of one fold share its test split, so
  they are averaged first: one difference per fold (per seed when there are no folds). Then the mean
  difference, a t interval (95%) and an exact two-sided sign-flip permutation p-value: under "no
  difference" each unit's difference is as likely to be negated, so all 2^n sign patterns are equally
  likely (exact; with n units the smallest possible p is 2 / 2^n).
- over test items: per-item correctness from predictions.csv, each item's correctness averaged over
  the seeds of its fold; the statistic is the mean over folds of each fold's accuracy difference.
  A paired bootstrap resamples items within each fold; the interval is its 2.5/97.5 percentiles and
  the p-value is how often a resample lies as far from the observed difference as 0 does.

A section with k variants makes k(k-1)/2 comparisons, so some small p-values are expected by chance:
each test's p-values are also given Holm-adjusted over the section's pairs (holm below), which
bounds the chance of any false "A differs from B" among them at the level read off.

Differences are in the unit of the inputs (the report passes accuracy in %, items as 0/1).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from daamlab.predictions import read_predictions

Key = tuple[int | None, int | None]  # (fold, seed); fold None: a train/test protocol with seeds only

EXACT_MAX_UNITS = 20  # 2^20 sign patterns; above this a Monte-Carlo sample of patterns


@dataclass(frozen=True)
class PairedResult:
    mean: float  # mean difference A - B
    low: float | None  # 95% interval; None when it cannot be computed (one unit)
    high: float | None
    p: float
    n: int  # units: folds, or seeds without folds (runs test); items (items test)
    p_holm: float | None = None  # p adjusted for the section's comparisons (section_comparisons)


def unit_differences(a: Mapping[Key, float], b: Mapping[Key, float]) -> dict[int | str, float]:
    """Per unit A - B over the keys both have: the mean over the seeds of each fold (seeds share
    their fold's test split, so they are not independent of each other), or per seed without folds."""
    by_unit: dict[int | str, list[float]] = defaultdict(list)
    for key in sorted(set(a) & set(b), key=str):
        fold, seed = key
        by_unit[fold if fold is not None else f"s{seed}"].append(a[key] - b[key])
    return {unit: float(np.mean(d)) for unit, d in by_unit.items()}


def sign_flip_p(diffs: np.ndarray, rng: np.random.Generator | None = None, samples: int = 100_000) -> float:
    """Two-sided p of a paired sign-flip permutation test: the share of sign patterns whose |mean|
    reaches the observed |mean| (exact up to EXACT_MAX_UNITS units)."""
    d = np.asarray(diffs, dtype=np.float64)
    observed = abs(d.mean())
    if len(d) <= EXACT_MAX_UNITS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        rng = rng or np.random.default_rng(0)
        signs = rng.choice((1.0, -1.0), size=(samples, len(d)))
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))  # ties count (float noise)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment, in the input's order: the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) * p_(j))."""
    order = np.argsort(ps, kind="stable")
    adjusted, running = np.empty(len(ps)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted.tolist()


def t_interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return None, None
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def paired_runs(a: Mapping[Key, float], b: Mapping[Key, float]) -> PairedResult | None:
    """A vs B over runs (fold, seed) -> accuracy; None when they share no run."""
    units = unit_differences(a, b)
    if not units:
        return None
    d = np.array(list(units.values()))
    low, high = t_interval(d)
    return PairedResult(float(d.mean()), low, high, sign_flip_p(d), len(d))


def paired_bootstrap(
    correct_a: Mapping[int | None, np.ndarray],
    correct_b: Mapping[int | None, np.ndarray],
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedResult | None:
    """A vs B over test items: fold -> per-item correctness (0..1, seeds already averaged), aligned
    item by item. Statistic: the mean over folds of each fold's mean difference."""
    folds = sorted(set(correct_a) & set(correct_b), key=str)
    if not folds:
        return None
    rng = np.random.default_rng(seed)
    observed, boot, items = [], [], 0
    for fold in folds:
        d = np.asarray(correct_a[fold], np.float64) - np.asarray(correct_b[fold], np.float64)
        if d.shape != np.shape(correct_b[fold]) or len(d) == 0:
            return None
        idx = rng.integers(0, len(d), size=(resamples, len(d)))
        observed.append(d.mean())
        boot.append(d[idx].mean(axis=1))
        items += len(d)
    stat = float(np.mean(observed))
    dist = np.mean(boot, axis=0)
    low, high = np.percentile(dist, [2.5, 97.5])
    # centred: how often a resample is at least as far from the estimate as "no difference" is
    p = (1 + np.sum(np.abs(dist - stat) >= abs(stat) - 1e-12)) / (resamples + 1)
    return PairedResult(stat, float(low), float(high), float(min(1.0, p)), items)


def read_correct(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """predictions.csv -> (row ids, 1.0 where prediction == label); None if the run has none."""
    if not path.is_file():
        return None
    _, rows = read_predictions(path)
    ids = np.array([int(r["row"]) for r in rows])
    correct = np.array([float(r["prediction"] == r["label"]) for r in rows])
    return ids, correct


def fold_correctness(
    runs: Mapping[Key, Path], keys: set[Key]
) -> dict[int | None, tuple[np.ndarray, np.ndarray]] | None:
    """Per fold, each test item's correctness averaged over that fold's seeds (the runs at `keys`),
    ordered by row; None when a run lacks predictions.csv or the seeds of a fold saw other rows."""
    per_fold: dict[int | None, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for key in keys:
        read = read_correct(runs[key])
        if read is None:
            return None
        ids, correct = read
        order = np.argsort(ids)
        per_fold[key[0]].append((ids[order], correct[order]))
    out = {}
    for fold, seeds in per_fold.items():
        ids0 = seeds[0][0]
        if any(len(ids) != len(ids0) or (ids != ids0).any() for ids, _ in seeds):
            return None
        out[fold] = (ids0, np.mean([c for _, c in seeds], axis=0))
    return out


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    runs: PairedResult  # accuracy in %, over folds (seeds averaged within each)
    items: PairedResult | None  # test accuracy in % over items; None without aligned predictions.csv
    note: str = ""


def compare(
    a: str, b: str, acc_a: Mapping[Key, float], acc_b: Mapping[Key, float],
    pred_a: Mapping[Key, Path], pred_b: Mapping[Key, Path],
) -> Comparison | None:  # fmt: skip
    """Both tests for variants a and b: accuracies in % per (fold, seed), predictions.csv per (fold, seed)."""
    runs = paired_runs(acc_a, acc_b)
    if runs is None:
        return None
    keys = set(acc_a) & set(acc_b) & set(pred_a) & set(pred_b)
    ca, cb = fold_correctness(pred_a, keys), fold_correctness(pred_b, keys)
    items, note = None, ""
    if ca is None or cb is None or not keys:
        note = "no aligned predictions.csv"
    elif set(ca) != set(cb) or any(not np.array_equal(ca[f][0], cb[f][0]) for f in ca):
        note = "the runs' test items differ"
    else:
        r = paired_bootstrap({f: c for f, (_, c) in ca.items()}, {f: c for f, (_, c) in cb.items()})
        if r is not None:
            items = PairedResult(100 * r.mean, 100 * r.low, 100 * r.high, r.p, r.n)
    return Comparison(a, b, runs, items, note)


def section_comparisons(rows) -> list[Comparison]:
    """Every pair of a report section's rows (aggregate.Row: one variant on one protocol), in the
    section's order. A (fold, seed) counts once per row: its first complete run by path, as the table.
    The accuracy compared is the test accuracy of the best-validation checkpoint: the same number as
    the best validation accuracy under the paper's protocol, the held-out one with a dev split."""
    keyed = []
    for row in rows:
        runs = {}
        done = (r for r in row.runs if r.status == "complete" and "acc" in r.test)
        for run in sorted(done, key=lambda r: str(r.path)):
            runs.setdefault((run.fold, run.seed), run)
        if runs:
            acc = {k: 100 * r.test["acc"] for k, r in runs.items()}
            keyed.append((row.label, acc, {k: r.path / "predictions.csv" for k, r in runs.items()}))
    out = []
    for (la, acc_a, pred_a), (lb, acc_b, pred_b) in itertools.combinations(keyed, 2):
        c = compare(la, lb, acc_a, acc_b, pred_a, pred_b)
        if c is not None:
            out.append(c)
    return _with_holm(out)


def _with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Each test's p-values Holm-adjusted over the comparisons that have that test."""
    runs = holm([c.runs.p for c in comparisons])
    with_items = [i for i, c in enumerate(comparisons) if c.items is not None]
    items = dict(zip(with_items, holm([comparisons[i].items.p for i in with_items]), strict=True))
    return [
        dataclasses.replace(
            c,
            runs=dataclasses.replace(c.runs, p_holm=runs[i]),
            items=None if c.items is None else dataclasses.replace(c.items, p_holm=items[i]),
        )
        for i, c in enumerate(comparisons)
    ]
