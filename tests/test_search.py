"""hparams_search=optuna: the plan of a search command, the refusal to tune on test, pruning through
the study's storage, and a small search end to end (trials, resume, the tuned re-run)."""

from __future__ import annotations

import lightning as L
import optuna
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch.utils.data import DataLoader, TensorDataset

from daamlab.accuracy import EpochHistory
from daamlab.data import validation_split
from daamlab.errors import DaamlabError
from daamlab.record import RunRecord
from daamlab.search import TrialPruning, check_objective, plan, run_search, search_space
from tests.conftest import run_script

SMALL = [
    "-m", "hparams_search=optuna", "modality=toy", "data.num_train=200", "data.num_test=40",
    "trainer.max_epochs=2", "decoder=linear", "logger=none", "trainer.enable_progress_bar=false",
]  # fmt: skip


def test_plan_splits_variants_grid_and_fixed_overrides():
    p = plan(["modality=toy", "attention=daam,none", "seed=1,2", "data.dev_fraction=0.2"])
    assert p.fixed == ["modality=toy", "data.dev_fraction=0.2"]
    assert p.variants == ["daam", "none"]  # one study each
    assert p.grid == [["seed=1"], ["seed=2"]]  # trials on the first point; the best re-runs on all
    assert plan(["modality=toy"]).variants == [None] and plan([]).grid == [[]]
    assert "attention.xi_init" in search_space("daam") and set(search_space("none")) == {
        "optim.lr",
        "optim.weight_decay",
    }


def test_validation_split_is_dev_then_the_datas_own_then_test():
    assert validation_split(0.2, None, ["train", "validation", "test"]) == "dev"
    assert validation_split(0.0, None, ["train", "validation", "test"]) == "validation"
    assert validation_split(0.0, 1, ["train", "validation", "test"]) == "test"  # folds: test is the fold
    assert validation_split(0.0, None, ["train", "test"]) == "test"  # the paper's protocol


def test_objective_on_the_test_split_is_refused(compose, tmp_path):
    with pytest.raises(DaamlabError, match="would tune on the test split"):
        check_objective(compose(["data.dev_fraction=0"]))
    check_objective(compose(["data.dev_fraction=0.2"]))
    # a table with a validation split of its own: tuning on it is honest, dev_fraction=0 or not
    table = tmp_path / "t.csv"
    rows = [(f"text {i}", "ab"[i % 2], ("train", "validation", "test")[i % 3]) for i in range(12)]
    table.write_text("text,label,split\n" + "".join(f"{t},{lab},{sp}\n" for t, lab, sp in rows))
    cfg = compose(["data=text_table", f"data.path={table}", "data.dev_fraction=0", "encoder=tiny_llama"])
    check_objective(cfg)


class KnownAccuracy(L.LightningModule):
    """val/acc at epoch e is ACC[e], logged where Classifier logs it (on_validation_epoch_end)."""

    ACC = (0.30, 0.35, 0.40, 0.45, 0.50)

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.w(x).pow(2).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.ACC[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_pruning_reports_each_epochs_own_accuracy_through_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(2):  # two finished trials at 0.9 on every epoch: the median to beat
        done = study.ask()
        for epoch in range(5):
            done.report(0.9, epoch)
        study.tell(done, 0.9)
    trial = study.ask()
    pruning, history = TrialPruning("s", storage, trial._trial_id, pruner="median"), EpochHistory()
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=5, callbacks=[pruning, history], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(KnownAccuracy(), loader, loader)
    stored = optuna.load_study(study_name="s", storage=storage).trials[2]  # what the sweeper reads
    # epoch 0 is the median pruner's warm-up; at epoch 1, 0.35 < 0.9: pruned, and training stops there
    # each epoch's own value, not the one before (float32, as Lightning logs it)
    assert stored.intermediate_values == pytest.approx({0: 0.30, 1: 0.35})
    assert stored.user_attrs["pruned_at_epoch"] == 1 and trainer.current_epoch == 2
    assert {e: row["val/acc"] for e, row in history.epochs.items()} == pytest.approx({0: 0.30, 1: 0.35})
    assert set(history.epochs[1]) == {"val/acc", "train/loss"}
    TrialPruning().on_validation_end(trainer, None)  # outside a search: inert


def test_search_on_dev_runs_its_trials_and_the_tuned_run(tmp_path):
    r = run_script(
        "train.py", *SMALL, "data.dev_fraction=0", "hydra.sweeper.n_trials=2", f"paths.log_dir={tmp_path}"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1].startswith("daamlab: error: hparams_search on data.dev_fraction=0")
    )
    assert not list(tmp_path.iterdir())  # refused before any trial: not even the sweep folder

    args = [*SMALL, "data.dev_fraction=0.25", "seed=1,2", "sweep_name=s", f"paths.log_dir={tmp_path}"]
    r = run_script("train.py", *args, "hydra.sweeper.n_trials=2")
    assert r.returncode == 0, r.stderr[-2000:]
    # the console keeps the trials (dev accuracy, one configuration each) apart from the result
    trials_part, results_part = r.stdout.split("search trials (2)")[1].split("results of 2 runs in")
    assert "daam trial 0" in trials_part and "daam trial 1" in trials_part
    assert "daam (tuned)" in results_part and "trial" not in results_part.split("(head params")[0]
    sweep = tmp_path / "train" / "multiruns" / "s"
    trials = sorted((sweep / "search" / "daam").glob("trial_*/metrics.json"))
    assert len(trials) == 2
    for seed in (1, 2):  # the best configuration re-run on every point of the grid (trials: seed=1)
        tuned = RunRecord.read(sweep / "tuned" / "daam" / f"seed={seed}" / "metrics.json")
        assert tuned.status == "complete" and "search:tuned" in tuned.tags and tuned.seed == seed
    study = optuna.load_study(study_name="s-daam", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert all(not RunRecord.read(p).test and not (p.parent / "predictions.csv").exists() for p in trials)
    values = sorted(RunRecord.read(p).best_val_acc for p in trials)  # trials never read the test split
    assert sorted(t.value for t in study.trials) == pytest.approx(values)  # the dev accuracy, per trial
    # the same command with more trials resumes the study: one more trial, not three
    r = run_script("train.py", *args, "hydra.sweeper.n_trials=3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((sweep / "search" / "daam").glob("trial_*/metrics.json"))) == 3


def test_trials_are_asked_and_launched_n_jobs_at_a_time(compose, tmp_path):
    batches = []

    def launch(jobs: list[list[str]]) -> list:
        batches.append(jobs)
        return [0.5 + 0.01 * len(batches) for _ in jobs]

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["modality=toy", "data.dev_fraction=0.2", "seed=1,2"]
    best = run_search(
        args, compose=compose, launch=launch, n_trials=5, study_name="p", storage=storage, n_jobs=2
    )
    *trial_batches, tuned = batches
    assert [len(b) for b in trial_batches] == [2, 2, 1]  # n_jobs at a time, never past n_trials
    subdirs = [o for b in trial_batches for job in b for o in job if o.startswith("hydra.sweep.subdir=")]
    assert len(set(subdirs)) == 5  # each trial its own run directory
    assert [o for job in tuned for o in job if o.startswith("seed=")] == ["seed=1", "seed=2"]
    parser = OverridesParser.create()  # a grid point's folder name holds `=`: its override must parse
    folders = [parser.parse_override(o).value() for job in tuned for o in job if "subdir" in o]
    assert folders == ["tuned/daam/seed=1", "tuned/daam/seed=2"]
    study = optuna.load_study(study_name="p-daam", storage=storage)
    assert len(study.trials) == 5 and best["daam"]["value"] == pytest.approx(0.53)


@pytest.mark.parametrize(
    "option,message",
    [
        ({"n_trials": 0}, "n_trials=0 must be an integer >= 1: trials per variant"),
        ({"n_jobs": True}, "n_jobs=True must be an integer >= 1"),
        ({"study_name": " "}, "study_name=' ' must be a non-empty name"),
        ({"storage": "/tmp/x.db"}, "storage='/tmp/x.db' is not a database URL: e.g. sqlite:////"),
        ({"storage": "sqlite:////proc/none/x.db"}, "cannot open the study's storage .*No such file"),
        ({"storage": "postgresql://u@localhost/db"}, "cannot open the study's storage .*DB access module"),
        ({"pruner": "hyperband"}, "pruner='hyperband' is not a pruner: median or none"),
    ],
)
def test_bad_sweeper_options_are_refused_before_any_trial(compose, tmp_path, option, message):
    def launch(jobs):
        raise AssertionError("a refused search launched jobs")

    options = {"n_trials": 2, "study_name": "s", "storage": f"sqlite:///{tmp_path / 'db' / 's.db'}"}
    with pytest.raises(DaamlabError, match=message):
        run_search(
            ["modality=toy", "data.dev_fraction=0.2"], compose=compose, launch=launch, **{**options, **option}
        )
    assert not (tmp_path / "db").exists()


def test_parallel_trials_train_at_the_same_time(tmp_path):
    """launcher=joblib with 2 workers: the sweeper launches 2 trials at once and both run together."""
    args = [
        *SMALL,
        "data.dev_fraction=0.25",
        "sweep_name=par",
        f"paths.log_dir={tmp_path}",
        "launcher=joblib",
    ]
    r = run_script("train.py", *args, "hydra.sweeper.n_trials=2", "hydra.sweeper.rerun_best=false")
    assert r.returncode == 0, r.stderr[-2000:]
    trials = sorted((tmp_path / "train" / "multiruns" / "par" / "search" / "daam").glob("trial_*"))
    spans = [_span(t / "train.log") for t in trials]
    assert len(spans) == 2 and spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # they overlap


def _span(log) -> tuple[float, float]:
    """The first and last timestamps of a run's train.log ([YYYY-mm-dd HH:MM:SS,mmm] lines)."""
    import datetime as dt

    stamps = [
        dt.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in log.read_text().splitlines()
        if line.startswith("[20")
    ]
    return stamps[0], stamps[-1]
