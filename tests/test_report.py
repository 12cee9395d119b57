"""The report's aggregation on hand-written run directories, the paper's numbers, and the IF math."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from daamlab.errors import DaamlabError
from daamlab.importance import importance_factor, layer_contribution, pick_layers, run_gates
from daamlab.record import RunRecord
from daamlab.report import PAPER_RESULTS, build_report, build_sections, collect, load_paper, mean_std
from daamlab.report.__main__ import main as report_main

PAPER_DAAM_V1 = 67.4  # Table 2a, DAAMv1, as printed


def write_run(
    path: Path,
    *,
    attention: dict | str,
    fold: int | None = None,
    seed: int = 1,
    acc: float | None = None,
    status: str = "complete",
    data: str = "iemocap",
    experiment: str | None = "paper_iemocap",
    config: bool = True,
    extra_cfg: dict | None = None,
    error: str | None = None,
) -> Path:
    """A run directory as training leaves it: config.yaml always first, metrics.json unless killed."""
    path.mkdir(parents=True)
    att = {"name": attention} if isinstance(attention, str) else attention
    tags = [f"experiment:{experiment}"] if experiment else []
    if config:
        cfg = {
            "attention": att,
            "data": {"name": data, "fold": fold, "layers": None},
            "seed": seed,
            "tags": tags,
        }
        cfg.update(extra_cfg or {})
        (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if status is None:
        return path
    record = RunRecord(
        status=status, attention=att["name"], data=data, fold=fold, seed=seed, tags=tags, error=error
    )
    if status == "complete":
        record.best_val_acc, record.best_epoch, record.epochs = acc, 0, 1
        record.test = {"acc": acc, "uar": acc - 0.01, "f1": acc - 0.02, "loss": 1.0}
        record.params = {"attention": 16384, "trainable": 200000, "total": 200000}
    record.write(path / "metrics.json")
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """paper_iemocap: daam on folds 1-3 (4, 5 missing), the published MHA on fold 1, none on folds 1-2,
    one failed run and one killed run (config.yaml but no metrics.json)."""
    root = tmp_path / "sweep"
    for fold, acc in [(1, 0.70), (2, 0.64), (3, 0.67)]:
        write_run(root / f"daam_f{fold}", attention="daam", fold=fold, acc=acc)
    mhsa_paper = {"name": "mhsa_paper", "num_heads": 8, "layer": 22, "batch_norm": False}
    write_run(root / "mhsa_paper_f1", attention=mhsa_paper, fold=1, acc=0.61)
    write_run(root / "none_f1", attention="none", fold=1, acc=0.50)
    write_run(root / "none_f2", attention="none", fold=2, acc=0.54)
    write_run(
        root / "gq_f1", attention="gq_daam", fold=1, status="failed", error="RuntimeError: out of memory"
    )
    write_run(root / "gq_f2", attention="gq_daam", fold=2, status=None)  # killed before metrics.json
    return root


def test_mean_std_is_the_population_std():
    values = [67.2, 64.6, 68.1, 67.9, 69.0]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.fmean(values))
    assert std == pytest.approx(statistics.pstdev(values))
    assert std < statistics.stdev(values)
    assert mean_std([3.0]) == (3.0, 0.0)


def test_paper_numbers_reproduce_the_printed_sigmas_of_the_population_convention():
    paper = load_paper(PAPER_RESULTS)
    rows = {(e, d, r.method): r for e, ds in paper.items() for d, t in ds.items() for r in t.rows}
    # docs/paper-vs-code.md, "Standard deviations": these printed sigmas are population stds of the printed runs
    for key in [
        ("paper_iemocap", "iemocap", "LoRA+ (r=4)"),
        ("paper_iemocap", "iemocap", "DAAMv1"),
        ("paper_cifar100", "cifar100", "LoRA (r=8)"),
    ]:
        row = rows[key]
        assert mean_std(row.values)[1] == pytest.approx(row.std, abs=0.006), key
        assert mean_std(row.values)[0] == pytest.approx(row.mean, abs=0.05), key
    # ... and IEMOCAP MHA -> BN does not (it matches the sample std instead)
    bn = rows[("paper_iemocap", "iemocap", "MHA → BN")]
    assert abs(mean_std(bn.values)[1] - bn.std) > 0.2
    assert statistics.stdev(bn.values) == pytest.approx(bn.std, abs=0.02)
    # every table has one value per run column; F1-F5 for IEMOCAP, R1-R5 CIFAR-100, R1-R3 AG News
    assert {len(r.values) for r in paper["paper_iemocap"]["iemocap"].rows} == {5}
    assert {len(r.values) for r in paper["paper_agnews"]["agnews"].rows} == {3}


def test_sections_rows_paper_column_and_missing_runs(sweep):
    runs, never_ran = collect([sweep])
    assert never_ran == []
    assert sorted(r.status for r in runs).count("complete") == 6
    (section,) = build_sections(runs, load_paper(PAPER_RESULTS))
    assert section.compare and section.paper.tables == "2a, 4"
    assert section.keys == ["F1", "F2", "F3", "F4", "F5"]  # the paper's 5 folds are expected
    rows = {r.label: r for r in section.rows if r.runs}

    daam = rows["daam"]
    accs = [70.0, 64.0, 67.0]
    assert daam.val_acc() == pytest.approx((statistics.fmean(accs), statistics.pstdev(accs)))
    assert daam.paper.method == "DAAMv1" and daam.paper.mean == PAPER_DAAM_V1
    assert section.delta(daam) == pytest.approx(statistics.fmean(accs) - PAPER_DAAM_V1)
    assert daam.missing == ["F4", "F5"]
    assert daam.test("uar") == pytest.approx((statistics.fmean(accs) - 1, statistics.pstdev(accs)))
    assert daam.params("attention") == [16384]

    # the published MHA (layer 22 only) is labelled by its non-default option and matched to "MHA"
    mha = rows["mhsa_paper[layer=22]"]
    assert mha.paper.method == "MHA" and mha.n == 1
    assert section.delta(mha) == pytest.approx(61.0 - 62.3)
    assert rows["none"].paper is None and section.delta(rows["none"]) is None
    # failed and killed runs count nowhere but are listed as missing folds of their variant
    assert rows["gq_daam"].n == 0 and rows["gq_daam"].missing == ["F1", "F2", "F3", "F4", "F5"]
    # paper methods nobody ran keep their row (the paper's layout), e.g. LoRA
    assert any(not r.runs and r.paper.method == "LoRA (r=4)" for r in section.rows)


def test_other_data_shows_the_paper_for_reference_without_a_difference(tmp_path):
    write_run(tmp_path / "a", attention="daam", fold=1, acc=0.9, data="espeak_emotion")
    (section,) = build_sections(collect([tmp_path])[0], load_paper(PAPER_RESULTS))
    (daam,) = [r for r in section.rows if r.runs]
    assert daam.paper.mean == PAPER_DAAM_V1 and not section.compare and section.delta(daam) is None
    assert "espeak_emotion" in section.note and "iemocap" in section.note


def test_seeds_without_an_experiment_and_without_paper(tmp_path):
    for seed, acc in [(1, 0.5), (2, 0.7)]:
        write_run(tmp_path / f"s{seed}", attention="daam", seed=seed, acc=acc, data="toy", experiment=None)
    (section,) = build_sections(collect([tmp_path])[0], None)
    (row,) = section.rows
    assert section.title == "toy" and section.keys == ["s1", "s2"]
    assert row.val_acc() == pytest.approx((60.0, 10.0))  # population std of 50 and 70


def test_duplicate_runs_are_not_counted_twice(tmp_path):
    write_run(tmp_path / "a", attention="daam", fold=1, acc=0.6)
    write_run(tmp_path / "b", attention="daam", fold=1, acc=0.8)
    (section,) = build_sections(collect([tmp_path])[0], None)
    (row,) = section.rows
    assert row.n == 1 and row.val_acc()[0] == pytest.approx(60.0) and row.duplicates == [tmp_path / "b"]


def test_report_files_list_failed_incomplete_and_never_started_jobs(sweep, tmp_path):
    # a multirun.yaml whose grid has a job with no run directory at all
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["attention=daam,none", "data.fold=1,2"]}}})
    )
    for name, overrides in [
        ("daam_f1", ["attention=daam", "data.fold=1"]),
        ("daam_f2", ["attention=daam", "data.fold=2"]),
        ("none_f1", ["attention=none", "data.fold=1"]),
    ]:
        (sweep / name / ".hydra").mkdir()
        (sweep / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "`attention=none data.fold=2`" in md  # never started (none_f2 has no .hydra: not from this sweep)
    assert "gq_f1`: failed (RuntimeError: out of memory)" in md
    assert "gq_f2`: incomplete" in md
    assert "population std (ddof=0)" in md
    assert "| DAAMv1 | daam | 70.0 | 64.0 | 67.0 |  |  | 67.0 ± 2.45 | 67.4 ± 1.49 | -0.4 |" in md
    with open(out / "report.csv") as f:
        daam = next(r for r in csv.DictReader(f) if r["variant"] == "daam")
    assert float(daam["val_acc_mean"]) == pytest.approx(67.0)
    assert float(daam["delta"]) == pytest.approx(67.0 - PAPER_DAAM_V1)
    assert daam["missing"] == "F4 F5" and daam["paper_method"] == "DAAMv1"
    assert (out / "accuracy_paper_iemocap-iemocap.png").stat().st_size > 0


def test_report_rejects_a_folder_without_runs(tmp_path):
    with pytest.raises(DaamlabError, match="no run directories"):
        build_report([tmp_path], tmp_path / "out")
    assert report_main([str(tmp_path / "nope")]) == 2


def test_importance_factor_is_a_global_min_max():
    gates = np.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_allclose(importance_factor(gates), [[0.0, 0.25], [0.5, 1.0]])
    assert (importance_factor(np.full((3, 4), 0.7)) == 0).all()
    share = layer_contribution(gates)
    np.testing.assert_allclose(share, [100 * 3 / 11, 100 * 8 / 11])
    with pytest.raises(DaamlabError, match="layers, features"):
        importance_factor(np.ones(5))


def test_pick_layers_takes_the_highest_or_lowest_contiguous_window(tmp_path):
    per_layer = np.array([0.5, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.6])
    gates = np.repeat(per_layer[:, None], 4, axis=1)
    assert pick_layers(gates, "high", 1) == [1]
    assert pick_layers(gates, "low", 1) == [4]
    assert pick_layers(gates, "high", 3) == [1, 2, 3]
    assert pick_layers(gates, "low", 3) == [4, 5, 6]
    # a run trained on a layer subset reports the encoder's layer numbers
    assert pick_layers(gates, "high", 2, layers=[10, 11, 12, 13, 14, 15, 16, 17]) == [11, 12]
    with pytest.raises(DaamlabError, match="high' or 'low"):
        pick_layers(gates, "best", 1)
    with pytest.raises(DaamlabError, match="num_layers=9"):
        pick_layers(gates, "high", 9)
    with pytest.raises(DaamlabError, match="gates.npy"):
        run_gates(tmp_path)


def test_variant_label_names_options_that_differ_from_the_attention_config(tmp_path):
    daam = {"name": "daam", "num_heads": 8, "delta_init": 0.0, "xi_init": 2.0}
    write_run(tmp_path / "a", attention=daam, fold=1, acc=0.5)
    write_run(tmp_path / "b", attention={**daam, "num_heads": 4, "xi_init": 1.0}, fold=1, acc=0.5)
    # a modality that sets daam_heads changes the default the label is measured against
    write_run(
        tmp_path / "c", attention={**daam, "num_heads": 4}, fold=1, acc=0.5, extra_cfg={"daam_heads": 4}
    )
    labels = {r.path.name: r.variant for r in collect([tmp_path])[0]}
    assert labels == {"a": "daam", "b": "daam[num_heads=4,xi_init=1.0]", "c": "daam"}
