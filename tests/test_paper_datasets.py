"""The paper's setups end to end: modality presets, the no-data message, and training on the fixtures.

`modality=speech|vision|text` must give the paper's protocol; `train.py modality=speech` with no IEMOCAP
must stop in seconds saying where to get it; on the miniature IEMOCAP (daamlab.sources.fixtures) with a
tiny random WavLM, each fold's test set is exactly its session (one fold here, all 5 in the slow test).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daamlab.errors import DaamlabError
from daamlab.record import RunRecord
from daamlab.sources.fixtures import write_agnews, write_cifar100, write_iemocap
from tests.conftest import run_script

QUICK = ["trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false", "decoder.channels=8"]


@pytest.mark.parametrize(
    ("modality", "data", "encoder", "batch", "lr", "loss"),
    [
        ("speech", "iemocap", "wavlm_large", 8, 1e-4, "focal"),
        ("vision", "cifar100", "beit_large", 32, 1e-5, "ce"),
        ("text", "agnews", "llama2_13b", 32, 5e-5, "ce"),
    ],
)
def test_modalities_give_the_papers_protocol(compose, modality, data, encoder, batch, lr, loss):
    cfg = compose([f"modality={modality}"])
    assert (cfg.modality_name, cfg.data.name, cfg.encoder.name) == (modality, data, encoder)
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.loss.name, cfg.trainer.max_epochs) == (batch, lr, loss, 35)
    assert cfg.data.dev_fraction == 0.0  # the paper selects on the test split; README says how to change it


def test_speech_protocol_keys(compose, monkeypatch):
    monkeypatch.delenv("IEMOCAP_ROOT", raising=False)
    cfg = compose(["modality=speech"])
    assert cfg.data.root is None and list(cfg.data.classes) == ["neu", "hap", "ang", "sad"]
    assert dict(cfg.data.merge) == {"exc": "hap"} and cfg.data.chunk_seconds == 5.0
    assert list(cfg.data.fold_groups) == [f"Session{k}" for k in range(1, 6)] and cfg.data.fold == 1
    assert (cfg.loss.alpha, cfg.loss.gamma) == (0.25, 2.5)
    monkeypatch.setenv("IEMOCAP_ROOT", "/data/IEMOCAP_full_release")
    assert compose(["modality=speech"]).data.root == "/data/IEMOCAP_full_release"


def test_speech_without_data_stops_before_any_model_loads(compose, tmp_path, monkeypatch):
    from omegaconf import open_dict

    from daamlab.training import train

    monkeypatch.delenv("IEMOCAP_ROOT", raising=False)
    cfg = compose(["modality=speech", f"paths.cache_dir={tmp_path}", "logger=none"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    started = time.time()
    with pytest.raises(
        DaamlabError, match=r"^data.root is not set\. .*https://sail.usc.edu/iemocap/.*data.root="
    ):
        train(cfg)
    assert time.time() - started < 10  # the source is built before the encoder: WavLM-Large is never loaded
    assert not list(tmp_path.glob("iemocap-*"))  # and no cache was started


@pytest.mark.slow  # the same check in-process above; this one is the literal command line
def test_speech_without_data_fails_in_seconds_saying_where_to_get_iemocap(tmp_path, monkeypatch):
    monkeypatch.delenv("IEMOCAP_ROOT", raising=False)
    started = time.time()
    result = run_script(
        "train.py",
        "modality=speech",
        "attention=daam",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("daamlab: error: data.root is not set")
    assert "https://sail.usc.edu/iemocap/" in error and "data.root=/path/to/IEMOCAP_full_release" in error
    assert time.time() - started < 60  # no model was loaded (a 2-core machine: imports alone take seconds)


def speech_run(fixture_root: Path, out: Path, *extra: str, multirun: bool = False):
    return run_script(
        "train.py",
        *(["-m"] if multirun else []),  # before the overrides, as on the command line
        "modality=speech",
        "attention=daam",
        "attention.num_heads=4",  # the tiny WavLM has 4 layers; the paper's g=8 needs 8k of them
        "encoder=tiny_wavlm",
        f"data.root={fixture_root}",
        f"paths.log_dir={out}",
        f"paths.cache_dir={out / 'cache'}",
        *QUICK,
        *extra,
    )


def test_speech_one_fold_on_the_iemocap_fixture_tests_on_its_session(tmp_path):
    fixture = write_iemocap(tmp_path / "data")
    result = speech_run(fixture.root, tmp_path / "out", "data.fold=2", "data.chunk_seconds=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "out").glob("train/runs/*/metrics.json")
    metrics = RunRecord.read(metrics_file)
    assert metrics.data == "iemocap" and metrics.fold == 2
    splits = metrics.splits
    assert splits["test"]["groups"] == ["Session2"] and splits["val"]["groups"] == ["Session2"]
    assert splits["train"]["groups"] == ["Session1", "Session3", "Session4", "Session5"]
    session2 = [
        t for t in fixture.turns if t.session == "Session2" and t.emotion not in ("fru", "xxx", "sur")
    ]
    assert splits["test"]["items"] == len(session2) == splits["test"]["rows"]  # short turns: one chunk each
    assert (
        splits["train"]["rows"] == splits["train"]["items"] + 11
    )  # Session1's 11.5 s turn: 12 one-second chunks
    # the two bad wavs of Session3 are skipped, and the run says so
    assert "skipped 2 input(s)" in result.stdout + result.stderr


@pytest.mark.slow
def test_speech_multirun_over_five_folds_tests_each_on_its_own_session(tmp_path):
    fixture = write_iemocap(tmp_path / "data")
    result = speech_run(fixture.root, tmp_path / "out", "data.fold=1,2,3,4,5", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "out" / "train" / "multiruns").rglob("metrics.json"))  # job dirs: overrides
    assert len(runs) == 5
    tested = {}
    for path in runs:
        metrics = RunRecord.read(path)
        tested[metrics.fold] = metrics.splits["test"]["groups"]
        assert f"Session{metrics.fold}" not in metrics.splits["train"]["groups"]
    assert tested == {k: [f"Session{k}"] for k in range(1, 6)}
    assert (
        len(list((tmp_path / "out" / "cache").glob("*/manifest.json"))) == 1
    )  # extracted once, used 5 times


@pytest.mark.slow
@pytest.mark.parametrize(
    ("modality", "encoder", "writer", "classes"),
    [("vision", "tiny_beit", write_cifar100, 100), ("text", "tiny_llama", write_agnews, 4)],
)
def test_vision_and_text_train_on_their_fixtures(tmp_path, modality, encoder, writer, classes):
    path = writer(tmp_path / "data", fmt="parquet")
    result = run_script(
        "train.py",
        f"modality={modality}",
        "attention=daam_v2",
        f"encoder={encoder}",
        f"data.path={path}",
        f"paths.log_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'out' / 'cache'}",
        *QUICK,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "out").glob("train/runs/*/metrics.json")
    splits = RunRecord.read(metrics_file).splits
    assert len(splits["train"]["classes"]) == classes
    assert splits["test"]["groups"] == ["test"] and splits["train"]["groups"] == ["train"]
    skipped_rows = 1 if modality == "vision" else 2  # the fixture's undecodable image / empty texts
    assert splits["train"]["rows"] == 12 - skipped_rows


@pytest.mark.slow  # the same message is checked in-process in test_sources.py
def test_offline_hub_without_a_local_copy_is_one_clear_message(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    result = run_script(
        "train.py",
        "modality=text",
        "encoder=tiny_llama",
        "data.hub_id=daamlab-tests/no-such-dataset",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}",
        *QUICK,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("daamlab: error: could not load AG News from the hub")
    )
