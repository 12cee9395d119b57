"""Shared test set-up: offline, no W&B network, small Hydra compositions."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# the toy source's features are cached like any source's: tests share one cache outside the repo
os.environ.setdefault("DAAMLAB_CACHE", tempfile.mkdtemp(prefix="daamlab-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]

# the smallest toy run that still trains, tests and writes its record (about 2 s of training)
TOY_ONE_EPOCH = [
    "data.num_train=120",
    "data.num_test=40",
    "decoder=linear",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def chooses_modality(override: str) -> bool:
    """`modality=...`, or an experiment whose config picks the modality (paper_iemocap, not the ablation)."""
    key, _, value = override.lstrip("+").partition("=")
    if key == "experiment":
        experiment = ROOT / "configs" / "experiment" / f"{value}.yaml"
        return experiment.is_file() and "override /modality" in experiment.read_text()
    return key == "modality"


def toy_unless_chosen(overrides) -> list[str]:
    """train.py's default modality is speech_demo (minutes of synthesis and extraction on first use);
    tests train on the toy features unless they choose a modality."""
    overrides = list(overrides)
    return overrides if any(chooses_modality(o) for o in overrides) else ["modality=toy", *overrides]


@pytest.fixture
def compose():
    """compose(overrides, config_name="train") -> DictConfig as train.py sees it (no hydra node;
    tests set paths.output_dir themselves)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from daamlab import resolvers

    resolvers.register()  # what the entry points do before Hydra composes

    def _compose(overrides: list[str] = (), config_name: str = "train"):
        GlobalHydra.instance().clear()
        if config_name == "train":
            overrides = toy_unless_chosen(overrides)
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            return hydra_compose(config_name=config_name, overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def run_script(
    script: str, *args: str, cwd: Path = ROOT, timeout: int = 600, env: dict | None = None, toy: bool = True
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would; outputs go wherever the args say (tests pass paths.log_dir).
    train.py runs the toy unless the args choose a modality (`toy=False`: exactly the args given)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    if script == "train.py" and toy:
        args = toy_unless_chosen(args)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than fighting over a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
