"""Training end to end on the toy modality: configs, metrics.json, determinism, eval, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from omegaconf import open_dict

from daamlab.attention import gated_names, variants
from daamlab.build import ADAPTERS, build
from daamlab.errors import DaamlabError
from daamlab.record import RunRecord
from daamlab.training import train
from tests.conftest import ROOT, run_script

SMALL = [
    "data.num_train=400",
    "data.num_test=80",
    "trainer.max_epochs=3",
    "decoder=linear",  # the dat decoder is covered in test_attention; runs here stay cheap
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def small_cfg(compose, tmp_path, *overrides):
    cfg = compose([*SMALL, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


HEADS = sorted(p.stem for p in (ROOT / "configs" / "attention").glob("*.yaml") if p.stem not in ADAPTERS)


def test_every_head_config_has_its_module_and_every_module_its_config():
    assert HEADS == sorted(variants())


@pytest.mark.parametrize("name", HEADS)
def test_every_attention_config_composes_and_builds(compose, name):
    cfg = compose([f"attention={name}"])
    assert cfg.attention.name == name
    dm, model = build(cfg)
    x, y = next(iter(dm.train_dataloader()))
    assert model(x).shape == (cfg.data.batch_size, cfg.data.num_classes)
    assert model.gated == (name in gated_names())  # read from the built module's class


def test_train_writes_metrics_and_gates(compose, tmp_path):
    record = train(small_cfg(compose, tmp_path, "attention=daam"))
    saved = RunRecord.read(tmp_path / "metrics.json")
    assert saved == record  # what was written is what train() returned
    assert saved.status == "complete" and saved.attention == "daam" and saved.modality == "toy"
    assert saved.params["attention"] == 2 * 8 * 64  # 2 g d
    assert 0.25 < saved.best_val_acc <= 1.0
    # the paper's protocol validates on the test split and tests the best checkpoint: they agree
    assert saved.test["acc"] == pytest.approx(saved.best_val_acc, abs=1e-6)
    gates = np.load(tmp_path / "gates.npy")
    assert gates.shape == (24, 64) and (gates > 0).all() and (gates <= 1).all()
    assert np.load(tmp_path / "layer_importance.npy").shape == (24,)  # occlusion, beside the IF
    assert (tmp_path / "layer_importance.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").is_file() and list((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    # one row per test row, aligned with its item: the CSV's own accuracy is the test accuracy
    with (tmp_path / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == saved.splits["test"]["rows"] and len({r["row"] for r in rows}) == len(rows)
    hits = [r["prediction"] == r["label"] for r in rows]
    assert sum(hits) / len(rows) == pytest.approx(saved.test["acc"], abs=1e-6)
    probs = np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])
    assert probs.shape == (len(rows), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


def test_same_seed_same_numbers_other_seed_other_numbers(compose, tmp_path):
    a = train(small_cfg(compose, tmp_path / "a", "attention=mhsa"))
    b = train(small_cfg(compose, tmp_path / "b", "attention=mhsa"))
    c = train(small_cfg(compose, tmp_path / "c", "attention=mhsa", "seed=7"))
    assert a.test == b.test and a.best_val_acc == b.best_val_acc
    assert a.test != c.test
    assert not (tmp_path / "a" / "gates.npy").exists()  # mhsa has no gates


def test_dev_split_keeps_test_unseen(compose, tmp_path):
    m = train(small_cfg(compose, tmp_path, "data.dev_fraction=0.25"))
    assert m.test["acc"] != pytest.approx(m.best_val_acc, abs=1e-9)  # selected on dev, not on test


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["attention.num_heads=5"], "num_heads=5 does not divide the encoder's 24 layers"),
        (
            ["decoder=dat", "decoder.map_shape=[7,7]"],
            r"decoder.map_shape=\[7, 7\] holds 49 values but each layer has 64",
        ),
        (["optim.lr=-0.1"], "optim.lr=-0.1 is not valid: it must be a finite number > 0"),
        (["optim.lr=fast"], "optim.lr='fast' is not valid: it must be a finite number > 0"),
        (["data.batch_size=0"], "data.batch_size=0 is not valid: it must be a whole number >= 1"),
        (["data.fold=9"], "data.fold=9 is not a fold: 'toy' has 5 folds"),
    ],
)
def test_bad_input_is_one_clear_error(compose, tmp_path, overrides, message):
    with pytest.raises(DaamlabError, match=message):
        train(small_cfg(compose, tmp_path, *overrides))
    assert RunRecord.read(tmp_path / "metrics.json").status == "failed"  # recorded, not complete


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    r = run_script("train.py", "attention.num_heads=5", f"paths.log_dir={tmp_path}", "logger=none")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("daamlab: error: DAAM: num_heads=5 does not divide")
    assert "Traceback" not in r.stderr
    r = run_script("train.py", "attention=daam3", f"paths.log_dir={tmp_path}")
    assert (
        r.returncode != 0 and "Could not find 'attention/daam3'" in r.stderr and "Traceback" not in r.stderr
    )


def test_eval_reproduces_the_test_metrics(tmp_path):
    r = run_script("train.py", *SMALL, f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr[-2000:]
    # the console names the groups and overrides, not the 200-line config tree nor Lightning's adverts
    head = r.stdout.split("run directory:")[0].splitlines()
    assert [line.split(":")[0] for line in head] == ["config", "overrides"], head
    assert "attention=daam" in head[0].split() and head[1] == "overrides: modality=toy " + " ".join(SMALL)
    assert "💡" not in r.stdout + r.stderr
    trained = RunRecord.read(tmp_path / "run" / "metrics.json")
    ckpt = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    r = run_script(
        "eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/eval", "trainer.enable_progress_bar=false"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    evaluated = RunRecord.read(tmp_path / "eval" / "eval_metrics.json")
    assert evaluated.test["acc"] == pytest.approx(trained.test["acc"], abs=1e-6)
    assert evaluated.attention == "daam" and evaluated.params == trained.params
    predictions = [(tmp_path / d / "predictions.csv").read_text() for d in ("run", "eval")]
    assert predictions[0] == predictions[1]  # same checkpoint, same rows, same probabilities
