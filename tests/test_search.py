"""hparams_search=optuna: the plan of a search command, the refusal to tune on test, pruning through
the study's storage, and a small search end to end (trials, resume, the tuned re-run)."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf

from daamlab.errors import DaamlabError
from daamlab.record import RunRecord
from daamlab.search import TrialPruning, check_objective, plan, search_space
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


def test_objective_on_the_test_split_is_refused():
    with pytest.raises(DaamlabError, match="would tune on the test split"):
        check_objective(OmegaConf.create({"data": {"dev_fraction": 0.0}}))
    check_objective(OmegaConf.create({"data": {"dev_fraction": 0.2}}))


def test_pruning_reaches_the_trial_through_its_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(2):  # two finished trials at 0.9 on epochs 0 and 1: the median to beat
        done = study.ask()
        done.report(0.9, 0)
        done.report(0.9, 1)
        study.tell(done, 0.9)
    trial = study.ask()

    class Trainer:  # what the callback reads of Lightning's trainer
        sanity_checking, current_epoch, should_stop = False, 0, False
        callback_metrics = {"val/acc": 0.3}

    trainer = Trainer()
    pruning = TrialPruning("s", storage, trial._trial_id, pruner="median")
    pruning.on_validation_epoch_end(trainer, None)
    assert not trainer.should_stop  # epoch 0 is the median pruner's warm-up
    trainer.current_epoch = 1
    pruning.on_validation_epoch_end(trainer, None)
    assert trainer.should_stop  # 0.3 < median 0.9
    stored = optuna.load_study(study_name="s", storage=storage).trials[2]  # what the sweeper reads
    assert stored.user_attrs["pruned_at_epoch"] == 1 and stored.intermediate_values == {0: 0.3, 1: 0.3}
    TrialPruning().on_validation_epoch_end(trainer, None)  # outside a search: inert


def test_search_on_dev_runs_its_trials_and_the_tuned_run(tmp_path):
    r = run_script(
        "train.py", *SMALL, "data.dev_fraction=0", "hydra.sweeper.n_trials=2", f"paths.log_dir={tmp_path}"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1].startswith("daamlab: error: hparams_search on data.dev_fraction=0")
    )
    assert not list(tmp_path.rglob("metrics.json"))  # refused before any trial

    args = [*SMALL, "data.dev_fraction=0.25", "sweep_name=s", f"paths.log_dir={tmp_path}"]
    r = run_script("train.py", *args, "hydra.sweeper.n_trials=2")
    assert r.returncode == 0, r.stderr[-2000:]
    sweep = tmp_path / "train" / "multiruns" / "s"
    trials = sorted((sweep / "search" / "daam").glob("trial_*/metrics.json"))
    assert len(trials) == 2
    tuned = RunRecord.read(sweep / "tuned" / "daam" / "default" / "metrics.json")
    assert tuned.status == "complete" and "search:tuned" in tuned.tags
    study = optuna.load_study(study_name="s-daam", storage=f"sqlite:///{sweep / 'optuna.db'}")
    values = sorted(RunRecord.read(p).best_val_acc for p in trials)
    assert sorted(t.value for t in study.trials) == pytest.approx(values)  # the dev accuracy, per trial
    # the same command with more trials resumes the study: one more trial, not three
    r = run_script("train.py", *args, "hydra.sweeper.n_trials=3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((sweep / "search" / "daam").glob("trial_*/metrics.json"))) == 3
