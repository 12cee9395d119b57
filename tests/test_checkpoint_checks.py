"""Hostile checkpoints: each is one line (exit 2 from train.py ckpt_path= and eval.py), nothing is run
or written; a checkpoint of another variant or feature shape is refused naming the differing keys."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from daamlab.checkpointing import check_checkpoint
from daamlab.cli import run_cli
from daamlab.errors import DaamlabError
from daamlab.models.classifier import Classifier
from daamlab.training import evaluate, train
from tests.conftest import TOY_ONE_EPOCH

RUN = TOY_ONE_EPOCH

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared 2-core machine


class RunsCode:
    """Unpickling this calls os.system: weights_only must refuse it before anything runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One finished toy run (attention=daam): config.yaml and checkpoints/, as train.py leaves them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("run")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("train", overrides=["modality=toy", *RUN])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train(cfg)
    torch.set_num_threads(before)
    return out


def real_checkpoint(run_dir: Path) -> Path:
    return next((run_dir / "checkpoints").glob("epoch_*.ckpt"))


def variant(run_dir: Path, path: Path, **changes) -> Path:
    """A checkpoint as Lightning writes it, of the run's model with some hyper-parameters changed."""
    saved = torch.load(real_checkpoint(run_dir), map_location="cpu", weights_only=True)
    model = Classifier(**{**saved["hyper_parameters"], **changes})
    torch.save({**saved, "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def hostile(kind: str, run_dir: Path, path: Path) -> Path:
    """Write the hostile file `kind` at `path`."""
    real = real_checkpoint(run_dir).read_bytes()
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "truncated_half":
        path.write_bytes(real[: len(real) // 2])
    elif kind == "truncated_tail":
        path.write_bytes(real[:-64])
    elif kind == "unsafe_zip":  # torch.save's format, a pickle inside that would run code
        torch.save({"state_dict": RunsCode(path.parent / "PWNED")}, path)
    elif kind == "unsafe_pickle":  # a plain (legacy-format) pickle that would run code
        path.write_bytes(pickle.dumps({"state_dict": RunsCode(path.parent / "PWNED")}, protocol=2))
    elif kind == "unsafe_pickle4":  # the same in pickle protocol 4: refused at its first frame
        path.write_bytes(pickle.dumps({"state_dict": RunsCode(path.parent / "PWNED")}, protocol=4))
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "no_hparams":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "other_variant":
        variant(run_dir, path, attention={"name": "mhsa", "num_heads": 8})
    elif kind == "other_shape":
        variant(run_dir, path, dim=32)
    else:
        raise AssertionError(kind)
    return path


FILE_CASES = {
    "text": "is not a PyTorch checkpoint",
    "zero_bytes": r"is empty \(0 bytes\)",
    "truncated_half": "is truncated or damaged",
    "truncated_tail": "is truncated or damaged",
    "unsafe_zip": r"was refused: it holds a pickled object \(posix.system\) that would run code",
    "unsafe_pickle": r"was refused: it holds a pickled object \(posix.system\) that would run code",
    "unsafe_pickle4": r"is not a PyTorch checkpoint \(\d+ bytes, .*: UnpicklingError: Unsupported operand",
    "list": "is not a Lightning checkpoint: it holds a list",
    "no_hparams": "is not a daamlab checkpoint: it lacks 'hyper_parameters'",
}
MODEL_CASES = {
    "other_variant": r"attention.name: 'mhsa' in the checkpoint, 'daam' in the run's config",
    "other_shape": r"dim: 32 in the checkpoint, 64 in the run's config",
}


@pytest.mark.parametrize("kind", sorted(FILE_CASES))
def test_hostile_file_is_one_line_naming_it(run_dir, tmp_path, kind):
    path = hostile(kind, run_dir, tmp_path / "model.ckpt")
    with pytest.raises(DaamlabError, match=f"checkpoint {path} {FILE_CASES[kind]}") as info:
        check_checkpoint(path, None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()  # the pickle's code never ran


def test_unreadable_path_is_one_line(tmp_path):
    with pytest.raises(DaamlabError, match=f"checkpoint {tmp_path} cannot be read: Is a directory"):
        check_checkpoint(tmp_path, None)


@pytest.mark.parametrize("kind", sorted(MODEL_CASES))
def test_another_model_is_refused_listing_the_differing_keys(run_dir, tmp_path, kind):
    expected = torch.load(real_checkpoint(run_dir), weights_only=True)["hyper_parameters"]
    path = hostile(kind, run_dir, tmp_path / "model.ckpt")
    with pytest.raises(DaamlabError, match=MODEL_CASES[kind]) as info:
        check_checkpoint(path, expected)
    message = str(info.value)
    assert "\n" not in message and "is of another model than the run's config builds" in message


def test_the_real_checkpoint_passes_and_is_returned_loaded(run_dir):
    path = real_checkpoint(run_dir)
    expected = {**torch.load(path, weights_only=True)["hyper_parameters"], "compile": True}  # runtime only
    checkpoint = check_checkpoint(path, expected)
    assert set(checkpoint["state_dict"]) and checkpoint["hyper_parameters"]["attention"]["name"] == "daam"


def eval_cfg(compose, ckpt: Path, out: Path):
    cfg = compose([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"], config_name="eval")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def one_line_exit_2(task, cfg, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(task, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err and err[-1].startswith("daamlab: error: checkpoint "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize(
    "kind", ["text", "truncated_half", "zero_bytes", "unsafe_zip", "other_variant", "other_shape"]
)
def test_eval_refuses_a_hostile_checkpoint_in_the_run_directory(compose, run_dir, tmp_path, capsys, kind):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = hostile(kind, run_dir, run / "checkpoints" / "dropped.ckpt")
    line = one_line_exit_2(evaluate, eval_cfg(compose, path, tmp_path / "eval"), capsys)
    assert str(path) in line and (FILE_CASES | MODEL_CASES)[kind].replace("\\", "") in line
    assert not (tmp_path / "eval" / "eval_metrics.json").exists()  # nothing scored the wrong head
    assert not (run / "checkpoints" / "PWNED").exists()


def test_eval_of_the_real_checkpoint_still_scores_it(compose, run_dir, tmp_path):
    metrics = evaluate(eval_cfg(compose, real_checkpoint(run_dir), tmp_path / "eval"))
    assert metrics.attention == "daam" and 0.0 <= metrics.test["acc"] <= 1.0


@pytest.mark.parametrize("kind", ["text", "truncated_tail", "unsafe_pickle", "other_variant", "other_shape"])
def test_train_ckpt_path_refuses_a_hostile_checkpoint(compose, run_dir, tmp_path, capsys, kind):
    # outside any run directory: no config.yaml beside it, so only the checkpoint itself can tell
    path = hostile(kind, run_dir, tmp_path / "model.ckpt")
    cfg = compose([*RUN, f"ckpt_path={path}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    line = one_line_exit_2(train, cfg, capsys)
    assert str(path) in line and (FILE_CASES | MODEL_CASES)[kind].replace("\\", "") in line
    assert not (tmp_path / "PWNED").exists()
