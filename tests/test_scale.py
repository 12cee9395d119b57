"""Scale-out configs and the fault soak: launchers compose; a randomly killed parallel sweep completes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from daamlab.record import RunRecord
from tests.conftest import ROOT


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("train", overrides=[f"launcher={launcher}", "trainer=ddp"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":  # one SLURM task and one GPU per DDP rank
        assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices == 2
        assert cfg.hydra.launcher.gpus_per_node == 2


def test_sharded_extraction_composes_as_a_slurm_array():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(
            "extract",
            overrides=["launcher=slurm", "cache.num_shards=8", "cache.shard=3"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1 and (cfg.cache.shard, cfg.cache.num_shards) == (3, 8)


SOAK = [
    "-m",
    "launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "sweep_name=soak",
    "modality=toy",
    "attention=daam,none",
    "seed=range(1,11)",
    "data.num_train=200",
    "data.num_test=60",
    "decoder=linear",
    "trainer.max_epochs=3",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_soak_randomly_killed_parallel_sweep_completes_once(tmp_path):
    """20 toy jobs, 2 parallel workers, the whole sweep SIGKILLed at random moments, then re-run."""
    rng = random.Random(0)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), *SOAK, f"paths.log_dir={tmp_path}"]
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(rng.uniform(8, 25))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]
    assert kills >= 1

    jobs = sorted(p.parent for p in (tmp_path / "train" / "multiruns" / "soak").glob("*/config.yaml"))
    assert len(jobs) == 20  # no job duplicated, none missing
    seen = set()
    for job in jobs:
        metrics = RunRecord.read(job / "metrics.json")  # parses: not half-written
        assert metrics.status == "complete"
        seen.add((metrics.attention, metrics.seed))
        for ckpt in (job / "checkpoints").glob("*.ckpt"):
            torch.load(ckpt, map_location="cpu", weights_only=True)  # loads: not truncated
        assert not list(Path(job).rglob("*.tmp*")), f"temp files left in {job}"
    assert seen == {(a, s) for a in ("daam", "none") for s in range(1, 11)}
