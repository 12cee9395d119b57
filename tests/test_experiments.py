"""The paper experiments' configs, the Importance Factor layer ablation end to end, and W&B."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from daamlab.cli import run_cli
from daamlab.importance import pick_layers
from daamlab.record import RunRecord
from daamlab.report import build_sections, collect
from daamlab.report.stats import section_comparisons
from daamlab.training import train
from tests.conftest import ROOT, run_script

TINY = ["trainer.max_epochs=1", "data.num_train=120", "data.num_test=60", "decoder=linear", "logger=none"]
TINY += ["trainer.enable_progress_bar=false"]

PROTOCOLS = {  # experiment: (modality, data, batch, lr, loss, its own tags)
    "paper_iemocap": ("speech", "iemocap", 8, 1e-4, "focal", ["table:2a"]),
    "paper_cifar100": ("vision", "cifar100", 32, 1e-5, "ce", ["table:2b"]),
    "paper_agnews": ("text", "agnews", 32, 5e-5, "ce", ["table:2d"]),
}


@pytest.mark.parametrize("experiment", sorted(PROTOCOLS))
def test_paper_experiment_pins_the_protocol(compose, experiment):
    modality, data, batch, lr, loss, tags = PROTOCOLS[experiment]
    cfg = compose([f"experiment={experiment}"])
    assert (cfg.modality_name, cfg.data.name, cfg.data.batch_size) == (modality, data, batch)
    assert cfg.optim.lr == pytest.approx(lr) and cfg.optim.weight_decay == pytest.approx(0.01)  # the code's
    assert (cfg.loss.name, cfg.trainer.max_epochs, cfg.decoder.name) == (loss, 35, "dat")
    assert cfg.sweep_name == experiment  # a fixed sweep folder: re-running resumes it
    assert list(cfg.experiment_tags) == [f"experiment:{experiment}", *tags]


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "experiment").glob("*.yaml")), ids=lambda p: p.stem
)
def test_experiment_sets_only_what_differs_from_its_base(compose, path):
    """An experiment keeps only what its modality (or the defaults) would not give anyway: a key that
    repeats the value it would have is noise that drifts when the modality changes."""
    raw = yaml.safe_load(path.read_text())
    defaults = raw.pop("defaults", [])
    base_overrides = [f"{k.removeprefix('override /')}={v}" for d in defaults for k, v in d.items()]
    base = OmegaConf.to_container(compose(base_overrides), resolve=False)
    composed = OmegaConf.to_container(compose([f"experiment={path.stem}"]), resolve=False)

    def lookup(cfg, key):
        for part in key.split("."):
            cfg = cfg.get(part, "<absent>") if isinstance(cfg, dict) else "<absent>"
        return cfg

    repeated = []
    for key, value in _leaves(raw):
        assert lookup(composed, key) == value, f"{key} did not reach the composed config"
        if lookup(base, key) == value:
            repeated.append(f"{key}={value}")
    assert not repeated, f"{path.name} repeats what its base already sets: {repeated}"


def test_tags_follow_the_swept_values_and_command_line_tags_add_to_the_experiments(compose):
    from daamlab.tracking import run_tags

    cfg = compose(["experiment=paper_cifar100", "attention=mhsa", "seed=4", "tags=[mine]"])
    assert run_tags(cfg) == [
        "experiment:paper_cifar100", "modality:vision", "data:cifar100", "variant:mhsa", "seed:4", "table:2b", "mine",
    ]  # fmt: skip
    cfg = compose(["experiment=paper_iemocap", "data.fold=3", "tags=extra"])
    assert {"fold:3", "table:2a", "extra"} <= set(run_tags(cfg))


def _tiny(compose, out, *overrides):
    cfg = compose([*TINY, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def test_layer_ablation_trains_on_the_if_layers_of_a_previous_run(compose, tmp_path):
    source = tmp_path / "daam"
    train(_tiny(compose, source, "attention=daam"))
    gates = np.load(source / "gates.npy")
    assert np.load(source / "importance.npy").shape == gates.shape == (24, 64)
    assert (source / "importance.png").stat().st_size > 0

    runs = {}
    for pick in ("high", "low"):
        out = tmp_path / f"ablation_{pick}"
        cfg = _tiny(
            compose,
            out,
            "experiment=paper_layer_ablation",
            f"ablation.from_run={source}",
            f"ablation.pick={pick}",
            "ablation.num_layers=3",
        )
        assert list(cfg.data.layers) == pick_layers(gates, pick, 3) and cfg.attention.name == "daam_v2"
        runs[pick] = train(cfg)
        assert runs[pick].status == "complete" and runs[pick].params["attention"] == 2 * 64  # g=1: 2 d
        assert np.load(out / "gates.npy").shape == (3, 64)
        assert yaml.safe_load((out / "config.yaml").read_text())["data"]["layers"] == pick_layers(
            gates, pick, 3
        )
    # the pick names the variant everywhere (console table, report, W&B job type), and its tags stay
    assert (runs["high"].variant, runs["low"].variant) == ("daam_v2 · high IF", "daam_v2 · low IF")
    assert {"table:2e", "pick:low"} <= set(runs["low"].tags) and not any(
        "None" in t for t in runs["low"].tags
    )

    sections = build_sections(collect([tmp_path / "ablation_high", tmp_path / "ablation_low"])[0], None)
    (section,) = sections  # the picks are the ablation's inputs, not deviations from its protocol
    low = ",".join(map(str, pick_layers(gates, "low", 3)))
    assert f"daam_v2 · low IF (layers {low})" in [row.label for row in section.rows]
    (comparison,) = section_comparisons(section.rows)  # high vs low: the table's question
    assert sorted(c.split(" (")[0] for c in (comparison.a, comparison.b)) == [
        "daam_v2 · high IF",
        "daam_v2 · low IF",
    ]


def test_layer_ablation_without_a_source_run_is_one_line_of_error(compose, tmp_path, capsys):
    cfg = _tiny(compose, tmp_path, "experiment=paper_layer_ablation")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, cfg)
    assert exit_info.value.code == 2
    assert "needs ablation.from_run=" in capsys.readouterr().err


def test_an_open_wandb_run_is_finished_even_when_the_job_fails(monkeypatch):
    finished = []
    fake = types.SimpleNamespace(run=object(), finish=lambda exit_code: finished.append(exit_code))
    monkeypatch.setitem(sys.modules, "wandb", fake)

    def boom(cfg):
        raise RuntimeError("training blew up")

    with pytest.raises(RuntimeError, match="blew up"):
        run_cli(boom, None)
    assert run_cli(lambda cfg: 7, None) == 7
    assert finished == [1, 0]


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_and_figure(tmp_path):
    proc = run_script("train.py", "logger=wandb", "sweep_name=wb", f"paths.log_dir={tmp_path}", *TINY[:-2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    log = next(offline.glob("run-*.wandb")).read_bytes()
    for key in (
        b"val/acc_best",
        b"val/acc",
        b"params/attention",
        b"test/acc",
        b"daam-s1",
    ):  # daam-s1: the run name
        assert key in log, key
    assert list((offline / "files" / "media" / "images").glob("importance_*.png"))
    assert RunRecord.read(run_dir / "metrics.json").status == "complete"
