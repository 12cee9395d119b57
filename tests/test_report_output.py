"""The report's folder (figures named by section and variant, replaced as a whole), off-protocol
runs and search trials kept apart, and `--wandb` read back from the offline run."""

from __future__ import annotations

import time

import pytest

from daamlab.errors import DaamlabError
from daamlab.report import build_report
from daamlab.report.__main__ import main as report_main
from tests.test_stats import _run
from tests.test_tracking import wandb_records

RIGHT = [i < 30 for i in range(40)]
HALF = [i < 20 for i in range(40)]


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root / f"daam_s{seed}", "daam", seed, RIGHT, experiment="")
        _run(root / f"none_s{seed}", "none", seed, HALF, experiment="")
    # trainer.max_epochs is fixed by configs/modality/toy.yaml (10): this one is off-protocol
    _run(root / "short", "daam", 1, HALF, experiment="", trainer={"max_epochs": 2})
    trial = {"role": "trial", "trial": 0, "keys": ["optim.lr"]}
    _run(root / "trial_000", "daam", 1, RIGHT, experiment="", search=trial,
         optim={"lr": 0.003})  # fmt: skip
    return root


def test_off_protocol_runs_and_trials_are_kept_apart(runs, tmp_path):
    text = build_report([runs], tmp_path / "report", paper_path=None).read_text()
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == ["## toy", "## toy · off-protocol: trainer.max_epochs=2", "## toy · search trials"]
    main = text.split("## toy · off-protocol")[0]
    assert "| daam | none |" in main  # the paired row, only among runs on protocol
    assert "daam trial 0" in text.split("## toy · search trials")[1]


def test_report_folder_holds_only_the_current_report(runs, tmp_path):
    out = tmp_path / "report"
    build_report([runs], out, paper_path=None)
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.csv", "paired.csv", "accuracy_toy.png"} <= names
    assert {"confusion_toy_daam.png", "confusion_toy_none.png"} <= names  # by section and variant
    (runs / "none_s1").rename(tmp_path / "gone_s1")
    (runs / "none_s2").rename(tmp_path / "gone_s2")
    build_report([runs], out, paper_path=None)
    assert "confusion_toy_none.png" not in {p.name for p in out.iterdir()}  # no stale figures
    assert not list(tmp_path.glob(".report.*"))  # no temp folders left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DaamlabError, match=r"is not a report folder \(it holds notes.txt\)"):
        build_report([runs], out, paper_path=None)


def test_a_folder_of_the_users_own_report_like_files_is_never_replaced(runs, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    for name, text in {"notes.md": "my notes", "budget.csv": "a,b", "holiday.png": "png"}.items():
        (mine / name).write_text(text)
    with pytest.raises(DaamlabError, match="no .daamlab-report of an earlier report"):
        build_report([runs], mine, paper_path=None)
    assert sorted(p.name for p in mine.iterdir()) == ["budget.csv", "holiday.png", "notes.md"]
    assert (mine / "notes.md").read_text() == "my notes"


def test_a_killed_reports_temp_folder_is_removed_and_an_older_report_is_replaced(runs, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("# daamlab report\n\nan older version's report, without a marker\n")
    (out / "report_old_figure.png").write_text("png")
    dead = tmp_path / ".report.tmp-999999999"  # no such process
    dead.mkdir()
    (dead / "report.md").write_text("half")
    build_report([runs], out, paper_path=None)
    assert not dead.exists() and not (out / "report_old_figure.png").exists()
    assert (out / ".daamlab-report").is_file()


def test_report_to_wandb_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = tmp_path / "runs"
    for seed in (1, 2):  # a sweep name W&B would not take as an artifact's name
        _run(runs / f"daam_s{seed}", "daam", seed, RIGHT, experiment="", sweep_name="cmp: a/b")
        _run(runs / f"none_s{seed}", "none", seed, HALF, experiment="", sweep_name="cmp: a/b")
    out = tmp_path / "report"
    assert report_main([str(runs), "--out", str(out), "--paper", "none", "--wandb"]) == 0
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.time() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(log)):
        assert time.time() < deadline
        time.sleep(0.5)
    records = list(wandb_records(log))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.job_type, run.run_group) == ("report", "cmp: a/b")
    artifacts = [r.artifact.name for r in records if r.WhichOneof("record_type") == "artifact"]
    assert "report-cmp_a_b" in artifacts  # beside the ones W&B makes for the tables
    logged = {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == "history"
              for i in r.history.item}  # fmt: skip
    assert {"report/report/_type", "report/paired/_type", "report/figures/confusion_toy_daam/_type"} <= logged


def test_deviations_from_the_experiment_config():
    from omegaconf import OmegaConf

    from daamlab.report.protocol import deviations

    cfg = OmegaConf.create(
        {"modality_name": "speech", "seed": 3, "data": {"fold": 4, "batch_size": 8, "dev_fraction": 0.0},
         "optim": {"lr": 1e-4, "weight_decay": 0.01}, "trainer": {"max_epochs": 2}}
    )  # fmt: skip
    # paper_iemocap fixes 35 epochs; the swept seed and fold are not protocol
    assert deviations(cfg, "paper_iemocap") == ["trainer.max_epochs=2"]
    cfg.optim.lr, cfg.data.dev_fraction = 3e-3, 0.2
    assert deviations(cfg, "paper_iemocap") == [
        "data.dev_fraction=0.2",
        "optim.lr=0.003",
        "trainer.max_epochs=2",
    ]
    cfg.search = {"role": "tuned", "keys": ["optim.lr"]}  # what the search chose is no deviation
    assert deviations(cfg, "paper_iemocap") == ["data.dev_fraction=0.2", "trainer.max_epochs=2"]
