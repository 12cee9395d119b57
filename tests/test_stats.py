"""Paired statistics (report/stats.py) on hand-made numbers whose answers are known, and the report's
"Paired comparisons" table on hand-made run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from daamlab.report import build_report
from daamlab.report.stats import (
    holm,
    paired_bootstrap,
    paired_runs,
    sign_flip_p,
    t_interval,
    unit_differences,
)


def test_sign_flip_p_counts_the_sign_patterns_exactly():
    # [1,2,3,4]: only all-plus and all-minus reach |mean| 2.5 among 2^4 patterns
    assert sign_flip_p(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(2 / 16)
    # [3,1]: |±3±1|/2 = 2,1,1,2 -> two of four reach 2
    assert sign_flip_p(np.array([3.0, 1.0])) == pytest.approx(0.5)
    # no difference on average: every pattern ties
    assert sign_flip_p(np.array([1.0, -1.0])) == 1.0


def test_t_interval_is_mean_plus_minus_t_times_the_standard_error():
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert (low, high) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)), abs=1e-5)
    assert t_interval(np.array([1.0])) == (None, None)


def test_seeds_of_one_fold_are_averaged_before_the_test():
    a = {(1, 1): 70.0, (1, 2): 72.0, (2, 1): 60.0, (2, 3): 99.0}  # (2, 3): B has no such run
    b = {(1, 1): 69.0, (1, 2): 69.0, (2, 1): 58.0}
    assert unit_differences(a, b) == {1: 2.0, 2: 2.0}  # fold 1: mean of +1, +3
    r = paired_runs(a, b)
    assert (r.n, r.mean, r.low, r.high) == (2, 2.0, 2.0, 2.0)  # two folds, not three runs
    assert r.p == pytest.approx(0.5)  # 2 of 4 sign patterns
    seeds_only = paired_runs({(None, 1): 5.0, (None, 2): 7.0}, {(None, 1): 4.0, (None, 2): 4.0})
    assert (seeds_only.n, seeds_only.mean) == (2, 2.0)  # without folds each seed is a unit


def test_paired_bootstrap_on_items_with_a_known_difference():
    a = {None: np.ones(200)}
    b = {None: np.r_[np.ones(100), np.zeros(100)]}
    r = paired_bootstrap(a, b, resamples=2000)
    assert r.mean == pytest.approx(0.5) and r.n == 200
    assert 0.42 < r.low < 0.5 < r.high < 0.58  # se = sqrt(.25/200) = 0.035
    assert r.p == pytest.approx(1 / 2001)  # no resample is as far from 0.5 as 0 is
    same = paired_bootstrap(b, b, resamples=500)
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    # folds: mean of the per-fold differences (+1.0 and 0.0), not of the pooled items
    folds = paired_bootstrap({1: np.ones(10), 2: np.ones(30)}, {1: np.zeros(10), 2: np.ones(30)}, 500)
    assert folds.mean == pytest.approx(0.5)


def _run(
    path: Path, attention: str, seed: int, correct: list[bool], experiment: str = "toy_compare", **cfg_extra
) -> None:
    path.mkdir(parents=True)
    tags = [f"experiment:{experiment}"] if experiment else []
    cfg = {"attention": {"name": attention}, "data": {"name": "toy", "fold": None, "layers": None}}
    cfg = {**cfg, "seed": seed, "tags": tags, "sweep_name": "cmp", "modality_name": "toy", **cfg_extra}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    acc = float(np.mean(correct))
    metrics = {
        "status": "complete", "attention": attention, "data": "toy", "fold": None, "seed": seed,
        "tags": tags, "best_val_acc": acc, "test": {"acc": acc}, "params": {},
    }  # fmt: skip
    (path / "metrics.json").write_text(json.dumps(metrics))
    with (path / "predictions.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", "id", "group", "label", "prediction", "p_a", "p_b"])
        for row, ok in enumerate(correct):
            out.writerow([row, f"item{row}", "g", "a", "a" if ok else "b", 0.9 if ok else 0.1, 0.1])


def test_report_has_a_paired_row_with_interval_and_p(tmp_path):
    # daam is right on 80, 90, 100 of 100 items (seeds 1-3); gaussian and none on the first 50 each time
    root = tmp_path / "sweep"
    for seed, n_right in [(1, 80), (2, 90), (3, 100)]:
        _run(root / f"daam_s{seed}", "daam", seed, [i < n_right for i in range(100)])
        _run(root / f"gaussian_s{seed}", "gaussian", seed, [i < 50 for i in range(100)])
        _run(root / f"none_s{seed}", "none", seed, [i < 50 for i in range(100)])
    text = build_report([root], tmp_path / "report", paper_path=None).read_text()
    assert "### Paired comparisons" in text
    rows = {}
    for line in text.split("### Paired comparisons")[1].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 12 and cells[0] in ("daam", "gaussian"):
            rows[cells[0], cells[1]] = cells
    assert set(rows) == {("daam", "gaussian"), ("daam", "none"), ("gaussian", "none")}
    cells = rows["daam", "none"]
    # runs: differences 30, 40, 50 points -> mean 40, t interval 40 ± 4.303 * 10 / sqrt(3), p = 2/8;
    # Holm over the 3 pairs' p (0.25, 0.25, 1): 3 * 0.25
    assert cells[2:7] == ["+40.00", "[+15.16, +64.84]", "0.25", "0.75", "3"]
    # items: each item's correctness averaged over the 3 seeds, daam minus none, over 100 items;
    # p = 1/10001 (no resample reaches 0), Holm 3/10001
    assert cells[7] == "+40.00" and cells[9:12] == ["0.0001", "0.0003", "100"]
    assert rows["gaussian", "none"][2:7] == ["+0.00", "[+0.00, +0.00]", "1", "1", "3"]
    assert "assume" in text.split("### Paired comparisons")[1]
    with (tmp_path / "report" / "paired.csv").open() as f:
        paired = {(r["a"], r["b"], r["test"]): r for r in csv.DictReader(f)}
    assert float(paired["daam", "none", "runs"]["p_holm"]) == pytest.approx(0.75)
    assert float(paired["daam", "gaussian", "items"]["p_holm"]) == pytest.approx(
        3 / 10001, rel=1e-3
    )  # as written


def test_holm_adjusts_in_the_inputs_order():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2] and holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []
