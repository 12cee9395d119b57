"""Nothing lost on faults: a killed run resumes to the same numbers; checkpoints match their config."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from daamlab.record import RunRecord
from tests.conftest import ROOT, run_script

RUN = [
    "modality=toy",
    "data.num_train=400",
    "data.num_test=100",
    "decoder=linear",
    "trainer.max_epochs=5",
    "logger=none",
    "trainer.enable_progress_bar=false",
]
LOGGED = ["logger=csv" if o == "logger=none" else o for o in RUN]  # with its metrics.csv history


def val_history(run_dir) -> list[tuple[int, float]]:
    """(epoch, val/acc) rows of the run's metrics.csv, in file order."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [(int(r["epoch"]), float(r["val/acc"])) for r in csv.DictReader(f) if r.get("val/acc")]


def test_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    whole = run_script("train.py", *LOGGED, f"hydra.run.dir={tmp_path}/whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *LOGGED, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (run_dir / "metrics.json").exists(), "the run was not killed mid-training"

    resumed = run_script("train.py", *LOGGED, f"hydra.run.dir={run_dir}")  # ckpt_path=last is the default
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    a = RunRecord.read(tmp_path / "whole" / "metrics.json")
    b = RunRecord.read(run_dir / "metrics.json")
    assert b.best_val_acc == pytest.approx(a.best_val_acc, abs=1e-6)
    assert b.best_epoch == a.best_epoch
    for k in ("acc", "f1", "uar", "loss"):
        assert b.test[k] == pytest.approx(a.test[k], abs=1e-5)
    # the CSV history holds every epoch once, as the uninterrupted run's (Lightning's own logger
    # would have deleted the rows written before the kill)
    whole_history, resumed_history = val_history(tmp_path / "whole"), val_history(run_dir)
    assert [e for e, _ in whole_history] == list(range(5))
    assert [e for e, _ in resumed_history] == [e for e, _ in whole_history]
    assert [a for _, a in resumed_history] == pytest.approx([a for _, a in whole_history], abs=1e-6)
    # the accuracy figure's history came back from last.ckpt: every epoch, as logged
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["EpochHistory"]
    epochs = sorted(state["epochs"].items())
    assert [e for e, _ in epochs] == list(range(5))
    assert [row["val/acc"] for _, row in epochs] == pytest.approx([a for _, a in whole_history], abs=1e-6)
    assert (run_dir / "accuracy.png").stat().st_size > 0


def test_checkpoint_from_another_config_is_refused(tmp_path):
    first = run_script("train.py", *RUN, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run")
    assert first.returncode == 0, first.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    r = run_script(
        "train.py", *RUN, "attention=daam_v2", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/other"
    )
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "was trained with another config" in line and "attention.name: 'daam' -> 'daam_v2'" in line
    assert "attention.num_heads: 8 -> 1" in line
    assert (
        not (tmp_path / "other" / "metrics.json").exists()
        or RunRecord.read(tmp_path / "other" / "metrics.json").status == "failed"
    )


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    common = [*RUN, "trainer.max_epochs=3", "trainer.accelerator=cpu"]
    one = run_script("train.py", *common, "data.batch_size=32", f"hydra.run.dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr[-2000:]
    ddp = run_script(
        "train.py", *common, "trainer=ddp", "data.batch_size=16", f"hydra.run.dir={tmp_path}/ddp"
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = RunRecord.read(tmp_path / "one" / "metrics.json")
    b = RunRecord.read(tmp_path / "ddp" / "metrics.json")
    assert b.best_val_acc == pytest.approx(a.best_val_acc, abs=1e-6)
    for k in ("acc", "f1", "uar", "loss"):
        assert b.test[k] == pytest.approx(a.test[k], abs=1e-4)


def test_ddp_jobs_of_a_multirun_each_equal_one_process(tmp_path):
    """Lightning relaunches ranks >= 1 from sys.argv: inside a multirun each job must start its own
    ranks, as that job, in that job's folder (daamlab.cli.ddp_relaunches_this_job)."""
    sweep = ["-m", *RUN, "trainer.max_epochs=3", "trainer.accelerator=cpu", "attention=daam,none"]

    def results(name: str, *overrides: str) -> dict[str, dict]:
        done = run_script("train.py", *sweep, *overrides, f"hydra.sweep.dir={tmp_path / name}", timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs = {
            p.parent.name.split(",")[0]: RunRecord.read(p) for p in (tmp_path / name).glob("*/metrics.json")
        }
        assert set(runs) == {"attention=daam", "attention=none"}
        return runs

    one = results("one", "data.batch_size=32")
    ddp = results("ddp", "trainer=ddp", "data.batch_size=16")
    for job, a in one.items():
        assert ddp[job].status == "complete"
        assert ddp[job].best_val_acc == pytest.approx(a.best_val_acc, abs=1e-6)
        assert ddp[job].test["acc"] == pytest.approx(a.test["acc"], abs=1e-6)


@pytest.mark.parametrize(
    "head",
    [
        ["attention=daam_v2", "decoder=linear", "cache.enabled=false"],
        ["attention=lora", "attention.train_mode=false"],
    ],
    ids=["uncached", "lora"],
)
def test_encoder_in_the_loop_under_ddp_equals_one_process(tmp_path, head):
    """The encoder inside the loop (cache.enabled=false, or LoRA adapters in it) under DDP: each rank
    encodes its own shard; 2 ranks x batch 16 give one process's batch-32 numbers (LoRA with the
    encoder in eval mode: BEiT's stochastic depth would draw differently on each rank)."""
    common = [
        "modality=toy",
        "data=synthetic",
        "data.kind=image",
        "encoder=tiny_beit",
        "encoder.device=cpu",
        "data.num_train=64",
        "data.num_test=16",
        "data.num_classes=5",
        *head,
        "optim.lr=2e-2",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    for name, overrides in (("one", ["data.batch_size=32"]), ("ddp", ["trainer=ddp", "data.batch_size=16"])):
        done = run_script("train.py", *common, *overrides, f"hydra.run.dir={tmp_path / name}", timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (RunRecord.read(tmp_path / n / "metrics.json") for n in ("one", "ddp"))
    assert b.data_info["cache"] is None  # it did run without the cache
    assert b.best_val_acc == pytest.approx(a.best_val_acc, abs=1e-6)
    for k in ("acc", "loss"):
        assert b.test[k] == pytest.approx(a.test[k], abs=1e-5)
