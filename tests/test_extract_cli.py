"""extract.py and train.py over the cache: a killed extraction resumes to the same bytes, train.py
builds a missing cache once and later runs never load the encoder, and the CLI's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

from daamlab.features import extract as extract_module
from daamlab.features.extract import build_cache
from daamlab.record import RunRecord
from daamlab.training import train
from tests.conftest import ROOT, run_script

RESUME = [
    "data.num_train=40",
    "data.num_test=8",
    "data.delay_s=0.03",
    "cache.part_size=4",
    "encoder.device=cpu",
]
PARTS = 40 // 4 + 8 // 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared 2-core machine


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_killed_extraction_resumes_to_the_same_bytes(compose, tmp_path, monkeypatch):
    killed_dir = tmp_path / "killed"
    args = [*RESUME, f"paths.cache_dir={killed_dir}", f"paths.log_dir={tmp_path / 'logs'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "extract.py"), *args], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while len(list(killed_dir.rglob("parts/*.json"))) < 2:
        assert proc.poll() is None, "extract.py ended before it could be interrupted"
        assert time.monotonic() < deadline, "extract.py wrote no parts in time"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    (directory,) = [d for d in killed_dir.iterdir() if d.is_dir()]
    assert not (directory / "manifest.json").exists()
    done = len(list(directory.rglob("parts/*.json")))
    assert 2 <= done < PARTS

    encoded = []
    original = extract_module.encode_part
    monkeypatch.setattr(extract_module, "encode_part", lambda *a, **k: encoded.append(1) or original(*a, **k))
    build_cache(compose([*RESUME, f"paths.cache_dir={killed_dir}"], config_name="extract"))  # the rerun
    assert len(encoded) == PARTS - done  # finished parts are not redone

    reference = build_cache(
        compose([*RESUME, f"paths.cache_dir={tmp_path / 'whole'}"], config_name="extract")
    )
    assert reference.name == directory.name
    assert files(directory) == files(reference)  # byte-identical to an uninterrupted build


def test_train_builds_a_missing_cache_once_then_never_loads_the_encoder(compose, tmp_path, monkeypatch):
    built = []
    original = extract_module.build_encoder
    monkeypatch.setattr(extract_module, "build_encoder", lambda cfg: built.append(cfg.name) or original(cfg))
    common = [
        "data=synthetic",
        "encoder=tiny_wavlm",
        "encoder.device=cpu",
        "data.num_train=24",
        "data.num_test=8",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=2",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]

    def run(attention: str) -> dict:
        cfg = compose([*common, f"attention={attention}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / attention)
        return train(cfg)

    first = run("daam_v2")  # no cache yet: train.py extracts it on demand
    assert built == ["tiny_wavlm"]

    def refuse(cfg):
        raise AssertionError("the encoder was built although its cache exists")

    monkeypatch.setattr(extract_module, "build_encoder", refuse)
    second = run("mhsa")
    saved = RunRecord.read(tmp_path / "mhsa" / "metrics.json")
    assert saved.status == "complete" and saved.attention == "mhsa" and first.attention == "daam_v2"
    fingerprint = first.data_info["fingerprint"]
    assert fingerprint.startswith("synthetic-tiny_wavlm-") and saved.data_info["fingerprint"] == fingerprint
    assert second.params["attention"] != first.params["attention"]
    assert (tmp_path / "cache" / fingerprint / "manifest.json").is_file()


@pytest.mark.slow  # a cold interpreter start; the message itself is tested in test_encoders.py
def test_cli_errors_are_one_line(tmp_path):
    started = time.monotonic()
    result = run_script(
        "extract.py", "encoder=wavlm_large", f"paths.cache_dir={tmp_path}", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "daamlab: error: encoder model 'microsoft/wavlm-large' is not available: HF_HUB_OFFLINE=1"
    )
    assert "set encoder.path=" in last
    assert time.monotonic() - started < 60  # seconds, not the hub client's retries
    assert not any(tmp_path.glob("*/parts"))  # nothing was written
