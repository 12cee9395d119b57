"""A named sweep re-run skips its finished jobs and retrains only the ones that did not finish."""

from __future__ import annotations

import sys

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from daamlab.errors import DaamlabError
from daamlab.record import RunRecord
from daamlab.report import collect
from daamlab.rundir import finished_record
from tests.conftest import ROOT

TINY = [
    "trainer.max_epochs=1",
    "data.num_train=120",
    "data.num_test=60",
    "decoder=linear",
    "trainer.enable_progress_bar=false",
]


def run_train(*args: str):
    """train.py as a user runs it; prints whether wandb was ever imported (it must not be with logger=csv)."""
    import subprocess

    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('WANDB_LOADED', 'wandb' in sys.modules)); "
        f"sys.argv = ['train.py', *{list(args)!r}]; "
        "runpy.run_path('train.py', run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_rerun_of_a_killed_sweep_retrains_only_the_unfinished_job(tmp_path):
    args = [
        "-m",
        "modality=toy",
        "attention=daam,none",
        "sweep_name=resume",
        f"paths.log_dir={tmp_path}",
        "logger=csv",
        *TINY,
    ]
    first = run_train(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "WANDB_LOADED False" in first.stdout  # logger=csv never imports wandb

    sweep = tmp_path / "train" / "multiruns" / "resume"
    jobs = {d.name.split(",")[0]: d for d in sweep.iterdir() if d.is_dir()}
    assert set(jobs) == {"attention=daam", "attention=none"}  # named by their overrides
    done, killed = jobs["attention=daam"] / "metrics.json", jobs["attention=none"] / "metrics.json"
    before = (done.stat().st_mtime_ns, done.read_text())
    killed.unlink()  # as if the sweep had been killed while training this job

    second = run_train(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    log = second.stdout + second.stderr
    assert log.count("already complete (best val acc") == 1 and str(jobs["attention=daam"]) in log
    assert (done.stat().st_mtime_ns, done.read_text()) == before  # not retrained, not rewritten
    assert RunRecord.read(killed).status == "complete"  # retrained
    runs, never_ran = collect([sweep])
    assert sorted(r.status for r in runs) == ["complete", "complete"] and never_ran == []


@pytest.fixture
def finished(compose, tmp_path):
    """A config and a run dir that holds a complete run of exactly that config."""
    cfg = compose(TINY)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    RunRecord(status="complete", best_val_acc=0.5, best_epoch=0, epochs=1).write(tmp_path / "metrics.json")
    return cfg, tmp_path


def test_finished_run_is_returned_only_when_complete(finished):
    cfg, run = finished
    assert finished_record(cfg, run).best_val_acc == 0.5
    with open_dict(cfg):
        cfg.sweep_name = "renamed"  # how the run is filed does not change what it computed
    assert finished_record(cfg, run) is not None
    RunRecord(status="failed", error="x").write(run / "metrics.json")
    assert finished_record(cfg, run) is None
    (run / "metrics.json").unlink()
    assert finished_record(cfg, run) is None


def test_finished_run_with_another_config_is_an_error(finished):
    cfg, run = finished
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["optim"]["lr"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(DaamlabError, match=r"config differs \(optim\).*sweep_name="):
        finished_record(cfg, run)
