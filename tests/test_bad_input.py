"""The bad-input matrix: each bad input gets one line on stderr and exit status 2 from the same CLI
path train.py uses (cli.run_cli), and nothing is written over existing results or caches.

Other files test each message in depth; this table checks the user-facing contract across them.
The unknown-config-name case (Hydra's own error) runs as a subprocess in test_train.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import open_dict

from daamlab.cli import run_cli
from daamlab.training import train
from tests.conftest import TOY_ONE_EPOCH

TOY = TOY_ONE_EPOCH
TINY_CACHE = [
    "data=synthetic",
    "encoder=tiny_wavlm",
    "encoder.device=cpu",
    "attention.num_heads=4",
    "data.num_train=16",
    "data.num_test=8",
    "decoder=linear",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli(compose, out: Path, overrides: list[str], capsys) -> tuple[int, str]:
    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("daamlab: error: "), err
    return exit_info.value.code, err[-1]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["attention.num_heads=5"], "num_heads=5 does not divide the encoder's 24 layers"),
        (["data.fold=9"], "data.fold=9 is not a fold"),
        (["optim.lr=fast"], "optim.lr='fast' is not valid: it must be a finite number > 0"),
        (["data.batch_size=many"], "data.batch_size='many' is not valid: it must be a whole number >= 1"),
    ],
)
def test_config_and_data_errors(compose, tmp_path, capsys, overrides, message):
    code, line = cli(compose, tmp_path / "run", [*TOY, *overrides], capsys)
    assert code == 2 and message in line


def test_missing_or_empty_data_root_says_what_to_do(compose, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IEMOCAP_ROOT", raising=False)
    code, line = cli(compose, tmp_path / "run0", ["modality=speech", "encoder=tiny_wavlm"], capsys)
    assert code == 2 and "IEMOCAP" in line and "data.root" in line
    (tmp_path / "iemocap").mkdir()
    code, line = cli(
        compose,
        tmp_path / "run",
        ["modality=speech", "encoder=tiny_wavlm", f"data.root={tmp_path / 'iemocap'}"],
        capsys,
    )
    assert code == 2 and "Session1" in line


def test_damaged_or_foreign_cache_is_refused_and_left_as_it_is(compose, tmp_path, capsys):
    cache = tmp_path / "cache"
    cfg = compose([*TINY_CACHE, f"paths.cache_dir={cache}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "good")
    fingerprint = train(cfg).data_info["fingerprint"]
    directory = cache / fingerprint

    features = directory / "train" / "features.npy"
    features.write_bytes(features.read_bytes()[:-100])  # truncated
    before = digest(directory)
    code, line = cli(compose, tmp_path / "bad1", [*TINY_CACHE, f"paths.cache_dir={cache}"], capsys)
    assert code == 2 and f"{features} is truncated" in line
    assert digest(directory) == before  # not silently recomputed over

    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["fingerprint"] = "synthetic-other_encoder-0000"  # a manifest from another encoder's cache
    manifest["key"]["encoder"] = {"name": "other_encoder"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    before = digest(directory)
    code, line = cli(compose, tmp_path / "bad2", [*TINY_CACHE, f"paths.cache_dir={cache}"], capsys)
    assert (
        code == 2 and "manifest.json belongs to another cache" in line and "nothing was overwritten" in line
    )
    assert digest(directory) == before


def test_full_disk_is_one_line_and_keeps_earlier_results(compose, tmp_path, capsys, monkeypatch):
    def full(dir, prefix, suffix):  # every file daamlab writes goes through daamlab.io
        raise OSError(errno.ENOSPC, "No space left on device", str(dir))

    monkeypatch.setattr("daamlab.io.tempfile", SimpleNamespace(mkstemp=full))
    code, line = cli(compose, tmp_path / "run", TOY, capsys)
    assert code == 2
    assert (
        line.startswith(f"daamlab: error: cannot use {tmp_path / 'run'}")
        and "No space left on device" in line
    )


def test_finished_run_is_not_overwritten_by_another_config(compose, tmp_path, capsys):
    cfg = compose(TOY)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    before = digest(tmp_path / "run")
    code, line = cli(compose, tmp_path / "run", [*TOY, "attention=none"], capsys)
    assert code == 2 and "holds a finished run whose config differs (attention)" in line
    assert digest(tmp_path / "run") == before


def test_nan_features_are_refused_naming_the_items(compose, tmp_path, capsys, monkeypatch):
    from daamlab.encoders.hf import HFEncoder

    real = HFEncoder.encode

    def poisoned(self, inputs):
        out = real(self, inputs).clone()
        out[0, 0, 0] = float("nan")  # one item of every batch
        return out

    monkeypatch.setattr(HFEncoder, "encode", poisoned)
    code, line = cli(
        compose, tmp_path / "run", [*TINY_CACHE, f"paths.cache_dir={tmp_path / 'cache'}"], capsys
    )
    assert code == 2 and "non-finite features" in line and "(train_" in line  # names the items
    assert not list((tmp_path / "cache").rglob("features.npy"))  # nothing half-built is kept as a cache
