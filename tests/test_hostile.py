"""The hostile-input matrix (issue #15): every case is one row of a table (id, what it runs, the message it
must print) and asserts the whole contract at once: the exit status (2, or 0 where success is right), the
last stderr line starts `daamlab: error:` and names the problem, no traceback, and every file of an
earlier run and of the feature cache byte-identical before and after (sha256).

In-process rows call `cli.run_cli(task, cfg)` on a composed config, as train.py / eval.py / extract.py
do; rows whose failure happens in Hydra's own start (composition, folder names) or in a multirun run the
scripts as subprocesses and are marked `slow`.

Covered elsewhere and not repeated here: hostile checkpoint files one by one (tests/test_checkpoint_checks.py:
text, zero-byte, truncated, code-running pickles, another variant or shape, in check_checkpoint, eval and
train ckpt_path=); damaged cache parts and malformed manifests (tests/test_cache_integrity.py); a
damaged synthetic cache, NaN features, the full disk at the first write and a finished run re-run with
another config in-process (tests/test_bad_input.py).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from daamlab import io as daamlab_io
from daamlab.cli import run_cli
from daamlab.features.extract import extract
from daamlab.io import exclusive
from daamlab.record import RunRecord
from daamlab.training import evaluate, train
from tests.conftest import ROOT, TOY_ONE_EPOCH, run_script

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = TOY_ONE_EPOCH
EXTRACT = [  # the smallest real extraction: extract.yaml's synthetic audio through tiny_wavlm
    "data.num_train=8",
    "data.num_test=4",
    "encoder.device=cpu",
    "cache.part_size=4",
]
CACHE = Path(os.environ["DAAMLAB_CACHE"])  # tests/conftest.py: the toy features every train row reads


def digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"  # the lock file is opened (never written) by every try
    }


def unchanged(before: dict[str, str], after: dict[str, str]) -> bool:
    """Every earlier file still there, byte for byte (a new cache of other data may appear beside them)."""
    return all(after.get(k) == v for k, v in before.items())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One complete toy run (attention=daam, linear decoder), as train.py leaves it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from daamlab import resolvers

    resolvers.register()
    out = tmp_path_factory.mktemp("finished") / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("train", overrides=["modality=toy", *TOY, f"paths.output_dir={out}"])
    GlobalHydra.instance().clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert train(cfg).status == "complete"
    torch.set_num_threads(threads)
    return out


@dataclass
class Case:
    id: str
    args: list[str]  # overrides; {run} is a copy of the finished run, {tmp} this case's folder
    message: str  # a fragment the last stderr line must hold
    task: str = "train"  # train | eval | extract
    prepare: Callable[[Path, Path], None] | None = None  # (tmp, run): damage files before the run
    code: int = 2
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    toy: bool = True  # add TOY to the overrides (train rows)


def full_disk(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    def full(dir, prefix, suffix):  # every file daamlab writes goes through daamlab.io
        raise OSError(errno.ENOSPC, "No space left on device", str(dir))

    mp.setattr(daamlab_io, "tempfile", SimpleNamespace(mkstemp=full))


def write(rel: str, data: bytes | str) -> Callable[[Path, Path], None]:
    def prepare(tmp: Path, run: Path) -> None:
        path = Path(rel.format(tmp=tmp, run=run))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return prepare


def unfinish(tmp: Path, run: Path) -> None:
    """A run killed after its first epoch: no metrics.json, its checkpoints and config still there."""
    (run / "metrics.json").unlink()


IN_PROCESS = [
    # 1. garbage recorded as complete
    Case("epochs-0", ["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
    Case("epochs-negative", ["trainer.max_epochs=-1"], "trainer.max_epochs=-1 is not valid"),
    Case("max-steps-0", ["+trainer.max_steps=0"], "no epoch was trained"),
    Case("limit-train-0", ["+trainer.limit_train_batches=0"], "no epoch was trained"),
    Case("no-train-items", ["data.num_train=0"], "data.num_train=0 is not valid"),
    Case("lr-inf", ["optim.lr=inf"], "optim.lr=inf is not valid"),
    Case("lr-nan", ["optim.lr=nan"], "optim.lr=nan is not valid"),
    Case("lr-1e12", ["optim.lr=1e12"], "non-finite training loss at epoch 0: the run diverged"),
    Case("lr-negative", ["optim.lr=-0.1"], "optim.lr=-0.1 is not valid"),
    Case("xi-0", ["attention.xi_init=0"], "attention.xi_init=0 is not valid"),
    Case("xi-negative", ["attention.xi_init=-1"], "attention.xi_init=-1 is not valid"),
    Case("delta-inf", ["attention.delta_init=inf"], "attention.delta_init=inf is not valid"),
    # 2. values no rule checked
    Case("seed-abc", ["seed=abc"], "seed='abc' is not valid"),
    Case("seed-negative", ["seed=-1"], "seed=-1 is not valid"),
    Case("seed-float", ["seed=1.5"], "seed=1.5 is not valid"),
    Case("layers-abc", ["data.layers=abc"], "data.layers='abc' is not valid"),
    Case("layers-empty", ["data.layers=[]"], "data.layers=[] is not valid"),
    Case("layers-repeated", ["data.layers=[1,1]"], "data.layers=[1, 1] is not valid"),
    Case("layers-out-of-range", ["data.layers=[0,99]"], "99"),
    Case("dev-fraction-abc", ["data.dev_fraction=abc"], "data.dev_fraction='abc' is not valid"),
    Case("dev-fraction-1", ["data.dev_fraction=1.0"], "data.dev_fraction=1.0 is not valid"),
    Case("weight-decay-negative", ["optim.weight_decay=-1"], "optim.weight_decay=-1 is not valid"),
    Case("plateau-factor-2", ["optim.plateau_factor=2"], "optim.plateau_factor=2 is not valid"),
    Case("num-workers-negative", ["data.num_workers=-1"], "data.num_workers=-1 is not valid"),
    Case("batch-size-0", ["data.batch_size=0"], "data.batch_size=0 is not valid"),
    Case("eval-batch-size-abc", ["data.eval_batch_size=abc"], "data.eval_batch_size='abc' is not valid"),
    Case(
        "chunk-seconds-abc",
        ["modality=speech", "encoder=tiny_wavlm", "data.chunk_seconds=abc"],
        "data.chunk_seconds='abc' is not valid",
        toy=False,
    ),
    Case(
        "chunk-seconds-tiny",
        ["modality=speech", "encoder=tiny_wavlm", "data.chunk_seconds=0.00001"],
        "data.chunk_seconds=1e-05 is not valid",
        toy=False,
    ),
    Case("gpu-without-one", ["trainer=gpu"], "no CUDA GPU; use trainer=cpu"),
    Case(
        "fold-leaves-no-training-items",
        ["data.num_groups=1", "data.fold=1"],
        "the train split of 'toy' has no items",
    ),
    Case("fold-0", ["data.fold=0"], "data.fold=0 is not valid"),
    Case("fold-out-of-range", ["data.fold=9"], "data.fold=9 is not a fold"),
    Case("num-classes-0", ["data.num_classes=0"], "data.num_classes=0 is not valid"),
    Case("num-classes-1", ["data.num_classes=1"], "data.num_classes=1 is not valid"),
    Case("num-heads-0", ["attention=mhsa", "attention.num_heads=0"], "attention.num_heads=0 is not valid"),
    Case("num-heads-abc", ["attention.num_heads=abc"], "attention.num_heads='abc' is not valid"),
    Case("dropout-1", ["attention=mhsa_bn", "+attention.dropout=1.0"], "attention.dropout=1.0 is not valid"),
    Case("dat-channels-0", ["decoder=dat", "decoder.channels=0"], "decoder.channels=0 is not valid"),
    Case("focal-gamma-negative", ["loss=focal", "loss.gamma=-1"], "loss.gamma=-1 is not valid"),
    Case("focal-alpha-2", ["loss=focal", "loss.alpha=2"], "loss.alpha=2 is not valid"),
    Case("part-size-0", ["cache.part_size=0"], "cache.part_size=0 is not valid"),
    Case("verify-bogus", ["cache.verify=bogus"], "cache.verify='bogus' is not valid"),
    Case("cache-enabled-maybe", ["cache.enabled=maybe"], "cache.enabled='maybe' is not valid"),
    Case("devices-0", ["trainer.devices=0"], "trainer.devices=0 is not valid"),
    Case("precision-bogus", ["trainer.precision=bogus"], "trainer.precision='bogus' is not valid"),
    Case("threads-0", ["++torch_threads=0"], "torch_threads=0 is not valid"),
    Case("print-config-bogus", ["print_config=bogus"], "print_config='bogus' is not valid"),
    Case("ig-steps-negative", ["ig_steps=-1"], "ig_steps=-1 is not valid: it must be a whole number"),
    Case("tags-nested", ["tags=[[a],b]"], "tags=[['a'], 'b'] is not valid: it must be a list of tags"),
    Case("tags-too-long", ["tags=[" + "x" * 65 + "]"], "it must be a list of tags of 1-64 characters"),
    Case("tags-empty", ["tags=['']"], "tags=[''] is not valid: it must be a list of tags of 1-64"),
    Case("test-maybe", ["test=maybe"], "test='maybe' is not valid"),
    Case("snr-reversed", ["augment=noise", "augment.snr_db=[30,10]"], "augment.snr_db=[30, 10] is not valid"),
    Case("flip-p-2", ["augment=crop_flip", "augment.flip_p=2"], "augment.flip_p=2 is not valid"),
    Case("map-shape-bad", ["decoder=dat", "decoder.map_shape=[0]"], "decoder.map_shape=[0] is not valid"),
    Case("ckpt-path-a-number", ["ckpt_path=5"], "ckpt_path=5 is not valid"),
    Case(
        "eval-gpu-without-one",
        ["ckpt_path={run}/checkpoints/last.ckpt", "trainer=gpu"],
        "no CUDA GPU",
        task="eval",
    ),
    Case(
        "eval-precision-bogus",
        ["ckpt_path={run}/checkpoints/last.ckpt", "trainer.precision=bogus"],
        "trainer.precision='bogus' is not valid",
        task="eval",
    ),
    # 3. checkpoints at the CLI
    Case("train-ckpt-missing", ["ckpt_path={tmp}/nope.ckpt"], "ckpt_path={tmp}/nope.ckpt is not a file"),
    Case(
        "train-ckpt-directory", ["ckpt_path={run}/checkpoints"], "ckpt_path={run}/checkpoints is not a file"
    ),
    Case(
        "train-ckpt-zero-bytes",
        ["ckpt_path={tmp}/zero.ckpt"],
        "is empty (0 bytes)",
        prepare=write("{tmp}/zero.ckpt", b""),
    ),
    Case("eval-no-ckpt-path", [], "ckpt_path is not set", task="eval"),
    Case("eval-ckpt-directory", ["ckpt_path={run}/checkpoints"], "is not a file", task="eval"),
    Case(
        "eval-ckpt-no-config",
        ["ckpt_path={tmp}/alone/checkpoints/last.ckpt"],
        "config.yaml not found",
        task="eval",
        prepare=lambda tmp, run: shutil.copytree(run / "checkpoints", tmp / "alone" / "checkpoints"),
    ),
    Case(
        "eval-run-config-corrupt",
        ["ckpt_path={run}/checkpoints/last.ckpt"],
        "cannot be read as YAML",
        task="eval",
        prepare=write("{run}/config.yaml", "a: [unclosed\n"),
    ),
    # 4. earlier results overwritten
    Case(
        "eval-into-the-run",
        ["ckpt_path={run}/checkpoints/last.ckpt", "paths.output_dir={run}"],
        "holds a training run",
        task="eval",
    ),
    Case(
        "rerun-other-config",
        ["paths.output_dir={run}", "attention=none"],
        "holds a finished run whose config differs (attention)",
    ),
    Case(
        "rerun-corrupt-metrics",
        ["paths.output_dir={run}"],
        "metrics.json is not valid JSON",
        prepare=write("{run}/metrics.json", "{not json"),
    ),
    Case(
        "rerun-metrics-a-list",
        ["paths.output_dir={run}"],
        "metrics.json is a JSON list, not a run record",
        prepare=write("{run}/metrics.json", "[]"),
    ),
    Case(
        "rerun-corrupt-config",
        ["paths.output_dir={run}"],
        "config.yaml cannot be read",
        prepare=write("{run}/config.yaml", "a: [unclosed\n"),
    ),
    Case(
        "resume-on-full-disk",
        ["paths.output_dir={run}"],
        "No space left on device",
        prepare=unfinish,
        patch=full_disk,
    ),
    Case("full-disk-at-start", [], "No space left on device", patch=full_disk),
    Case(
        "eval-full-disk",
        ["ckpt_path={run}/checkpoints/last.ckpt"],
        "No space left",
        task="eval",
        patch=full_disk,
    ),
    # 5. / 6. paths and caches
    Case("cache-dir-a-file", ["paths.cache_dir={tmp}/file"], "is a file", prepare=write("{tmp}/file", "x")),
    Case(
        "cache-dir-through-a-file",
        ["paths.cache_dir={tmp}/file/cache"],
        "is a file",
        prepare=write("{tmp}/file", "x"),
    ),
    Case("out-dir-a-file", ["paths.output_dir={tmp}/file"], "file", prepare=write("{tmp}/file", "x")),
    Case("out-dir-name-too-long", ["paths.output_dir={tmp}/" + "x" * 300], "File name too long"),
    Case(
        "cache-manifest-a-list",
        ["paths.cache_dir={tmp}/cache"],
        "manifest.json is not a feature cache manifest",
        prepare=lambda tmp, run: (
            shutil.copytree(CACHE, tmp / "cache"),
            [m.write_text("[]") for m in (tmp / "cache").rglob("manifest.json")],
        ),
    ),
    Case(
        "extract-cache-a-file",
        [*EXTRACT, "paths.cache_dir={tmp}/file"],
        "is a file",
        task="extract",
        prepare=write("{tmp}/file", "x"),
    ),
    Case(
        "extract-part-size-0",
        [*EXTRACT, "cache.part_size=0"],
        "cache.part_size=0 is not valid",
        task="extract",
    ),
    Case("extract-shard-out-of-range", [*EXTRACT, "cache.shard=3"], "cache.shard=3", task="extract"),
    Case(
        "extract-num-shards-0",
        [*EXTRACT, "cache.num_shards=0"],
        "cache.num_shards=0 is not valid",
        task="extract",
    ),
    Case(
        "extract-seed-abc",
        [*EXTRACT, "data.num_train=abc"],
        "data.num_train='abc' is not valid",
        task="extract",
    ),
    # the right behaviour is success
    Case("good-run", [], "", code=0),
    Case("rerun-finished-same-config", ["paths.output_dir={run}"], "", code=0),
]


def compose_case(compose, case: Case, tmp: Path, run: Path):
    args = [a.format(tmp=tmp, run=run) for a in case.args]
    if not any(a.startswith("paths.output_dir=") for a in args):
        args.append(f"paths.output_dir={tmp / 'out'}")
    if case.task == "train":
        return compose([*(TOY if case.toy else []), *args])
    if case.task == "extract":
        return compose(args, config_name="extract")
    return compose(args, config_name="eval")


@pytest.mark.parametrize("case", IN_PROCESS, ids=[c.id for c in IN_PROCESS])
def test_hostile_in_process(case: Case, compose, finished, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if case.prepare:
        case.prepare(tmp_path, run)
    guarded = {"run": run, "cache": CACHE}
    before = {name: digest(path) for name, path in guarded.items()}
    task = {"train": train, "eval": evaluate, "extract": extract}[case.task]
    capsys.readouterr()
    with monkeypatch.context() as mp:
        if case.patch:
            case.patch(mp, tmp_path)
        try:
            cfg = compose_case(compose, case, tmp_path, run)
            run_cli(task, cfg)
            code = 0
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == case.code, err
    if case.code:
        last = err.strip().splitlines()[-1]
        assert last.startswith("daamlab: error: "), err
        assert case.message.format(tmp=tmp_path, run=run) in last, last
    for name, path in guarded.items():
        if case.id == "good-run" and name == "run":
            continue
        assert unchanged(before[name], digest(path)), f"{name} changed"


# ----------------------------------------------------------------------------------- unit-level rows


def test_xi_is_floored_in_the_module_and_gradients_stay_finite():
    """DAAM's xi must stay positive however an optimiser moves it: both paths clamp it at XI_FLOOR in
    forward, the gates stay in (0, 1], and the fused and plain gradients agree and are finite."""
    from daamlab.attention.daam import DAAM
    from daamlab.attention.fused import XI_FLOOR

    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, dtype=torch.float64)
    outs = []
    for fused in (True, False):
        m = DAAM(num_layers=8, dim=5, num_heads=2, fused=fused).double()
        with torch.no_grad():
            m.xi[0].fill_(-3.0)  # what a large step could leave
            m.xi[1, :2] = 0.0
        xx = x.clone().requires_grad_(True)
        y, w = m(xx, return_gates=True)
        assert torch.isfinite(y).all() and (w >= 0).all() and (w <= 1).all()  # 0: underflow at the floor
        (y.square().sum() + w.sum()).backward()
        assert all(torch.isfinite(t).all() for t in (xx.grad, m.xi.grad, m.delta.grad))
        outs.append((y.detach(), xx.grad, m.xi.grad, m.delta.grad))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b)
    assert XI_FLOOR > 0
    # the floor is straight-through: a parameter below it still gets xi's own gradient (not clamp's zero)
    assert (outs[0][2][0] != 0).any()
    # above the floor, the published gate exactly: float64 gradcheck of the fused Function's backward
    m = DAAM(num_layers=8, dim=5, num_heads=2).double()
    xx = x[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: m(t, return_gates=True), (xx,))


# --------------------------------------------------------------------------------- report rows


def report_run(path: Path) -> Path:
    from tests.test_report import write_run

    return write_run(path, attention="daam", acc=0.6)


def gated(run: Path, occlusion: bool = False) -> bool:
    """Give a report run the gates (and occlusion importance) a gated run saves."""
    np.save(run / "gates.npy", np.full((6, 4), 0.5))
    if occlusion:
        np.save(run / "layer_importance.npy", np.linspace(0, 1, 6))
    return True


REPORT_CASES = [
    ("metrics-a-list", lambda d: (d / "metrics.json").write_text("[]"), [], "is a JSON list"),
    ("metrics-not-utf8", lambda d: (d / "metrics.json").write_bytes(b"\xff\xfe{"), [], "is not valid JSON"),
    (
        "metrics-wrong-types",
        lambda d: (d / "metrics.json").write_text(json.dumps({"status": "complete", "test": "high"})),
        [],
        "'test' is 'high'",
    ),
    (
        "config-corrupt",
        lambda d: (d / "config.yaml").write_text("a: [unclosed\n"),
        [],
        "cannot be read as YAML",
    ),
    ("config-a-list", lambda d: (d / "config.yaml").write_text("- 1\n- 2\n"), [], "config.yaml"),
    ("gates-text", lambda d: (d / "gates.npy").write_text("x"), [], "gates.npy cannot be read (not a .npy"),
    (
        "occlusion-text",
        lambda d: gated(d) and (d / "layer_importance.npy").write_text("x"),
        [],
        "layer_importance.npy cannot be read (not a .npy array of numbers)",
    ),
    (
        "importance-json-corrupt",
        lambda d: gated(d, occlusion=True) and (d / "layer_importance.json").write_text("{bad"),
        [],
        "layer_importance.json cannot be read (Expecting property name",
    ),
    (
        "importance-json-ig-text",
        lambda d: gated(d, occlusion=True) and (d / "layer_importance.json").write_text('{"ig": ["a"]}'),
        [],
        "layer_importance.json cannot be read (its 'ig' is not a list of numbers)",
    ),
    (
        "predictions-no-columns",
        lambda d: (d / "predictions.csv").write_text("a,b\n1,2\n"),
        [],
        "predictions.csv cannot be read (no column row, label, prediction)",
    ),
    (
        "predictions-row-text",
        lambda d: (d / "predictions.csv").write_text("row,label,prediction\nx,a,b\n"),
        [],
        "predictions.csv cannot be read (invalid literal for int()",
    ),
    ("paper-corrupt", None, ["--paper", "{tmp}/paper.yaml"], "paper.yaml"),
    ("paper-wrong-shape", None, ["--paper", "{tmp}/paper2.yaml"], "paper2.yaml is not a paper results file"),
    ("paper-missing", None, ["--paper", "{tmp}/nope.yaml"], "nope.yaml"),
    ("out-a-file", None, ["--out", "{tmp}/file"], "file"),
    ("path-missing", None, ["{tmp}/nothing"], "is not a directory"),
]


@pytest.mark.parametrize("case", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_hostile_report_input(case, tmp_path, capsys):
    from daamlab.report.__main__ import main as report_main

    name, damage, extra, message = case
    runs = tmp_path / "runs"
    report_run(runs / "a")
    if damage:
        damage(runs / "a")
    (tmp_path / "paper.yaml").write_text("experiments: [unclosed\n")
    (tmp_path / "paper2.yaml").write_text("experiments: {paper_iemocap: {iemocap: {rows: 3}}}\n")
    (tmp_path / "file").write_text("precious\n")
    out = tmp_path / "report"
    args = [a.format(tmp=tmp_path) for a in extra]
    paths = [a for a in args if not a.startswith("--") and args.index(a) == 0] or [str(runs)]
    opts = [a for a in args if a not in paths]
    before = digest(tmp_path)
    code = report_main([*paths, "--out", str(out), *opts])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("daamlab: error: ") and message.format(tmp=tmp_path) in last, last
    assert unchanged(before, digest(tmp_path))


def test_report_on_a_full_disk_keeps_the_previous_report(tmp_path, capsys, monkeypatch):
    from daamlab.report.__main__ import main as report_main

    report_run(tmp_path / "runs" / "a")
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "runs"), "--out", str(out), "--paper", "none"]) == 0
    before = digest(out)
    assert "report.md" in before and "report.csv" in before
    capsys.readouterr()
    full_disk(monkeypatch, tmp_path)
    code = report_main([str(tmp_path / "runs"), "--out", str(out), "--paper", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"daamlab: error: cannot write the report to --out {out}:")
    assert "No space" in err and digest(out) == before


# ------------------------------------------------------------------------------ subprocess rows


def script(name: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_script(name, *args, timeout=timeout, env=env, toy=False)  # exactly the args given


def one_line(r: subprocess.CompletedProcess, fragment: str, code: int = 2) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == code, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("daamlab: error: ") and fragment in last, r.stderr[-3000:]
    return last


TRAIN = ["modality=toy", *TOY]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["attention=daam3"],
            "Could not find 'attention/daam3' Available options in 'attention': daam",
        ),  # Hydra's composition error
        (["data=nope"], "Could not find 'data/nope'"),
        (["seed=[1"], "cannot parse the override 'seed=[1'"),  # an override Hydra cannot parse
        (["modality=null"], "modality=null"),
        (["hydra.run.dir={tmp}/" + "r" * 300], "File name too long"),  # Hydra mkdirs it before our task
        (["hydra.run.dir={tmp}/file/run"], "is a file"),
    ],
    ids=[
        "unknown-attention",
        "unknown-data",
        "unparsable-override",
        "modality-null",
        "run-dir-too-long",
        "run-dir-through-a-file",
    ],
)
def test_hydra_start_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    r = script("train.py", *TRAIN, f"paths.log_dir={tmp_path}", *[a.format(tmp=tmp_path) for a in args])
    one_line(r, message)


@pytest.mark.slow
def test_eval_py_without_ckpt_path_is_one_line(tmp_path):
    one_line(script("eval.py", f"paths.log_dir={tmp_path}"), "ckpt_path is not set")


@pytest.mark.slow
def test_sweep_name_too_long_is_one_line(tmp_path):
    r = script("train.py", "-m", *TRAIN, f"paths.log_dir={tmp_path}", "sweep_name=" + "s" * 300, "seed=1,2")
    one_line(r, "File name too long")


@pytest.mark.slow
def test_cache_env_pointing_at_a_file_is_one_line(tmp_path):
    (tmp_path / "cachefile").write_text("precious\n")
    r = script(
        "train.py", *TRAIN, f"paths.log_dir={tmp_path}", env={"DAAMLAB_CACHE": str(tmp_path / "cachefile")}
    )
    one_line(r, "is a file")
    assert (tmp_path / "cachefile").read_text() == "precious\n"


@pytest.mark.slow
def test_rerun_of_a_finished_run_with_another_config_keeps_hydra_and_log_files(tmp_path):
    run = tmp_path / "run"
    r = script("train.py", *TRAIN, f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / ".hydra" / "overrides.yaml").is_file()
    before = digest(run)
    one_line(
        script("train.py", *TRAIN, f"hydra.run.dir={run}", "attention=none"), "config differs (attention)"
    )
    # the finished-run check comes first: whatever the new value, the run is not touched
    one_line(script("train.py", *TRAIN, f"hydra.run.dir={run}", "seed=abc"), "config differs (seed)")
    ckpt = run / "checkpoints" / "last.ckpt"
    one_line(script("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={run}"), "holds a training run")
    assert digest(run) == before


@pytest.mark.slow
def test_a_failing_job_does_not_end_the_sweep(tmp_path):
    r = script(
        "train.py", "-m", *TRAIN, f"paths.log_dir={tmp_path}", "sweep_name=s", "data.dev_fraction=abc,1.5,0.2"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("daamlab: error: ")]
    assert len(errors) == 2 and "'abc'" in errors[0] and "1.5" in errors[1], errors
    sweep = tmp_path / "train" / "multiruns" / "s"
    records = {p.parent.name.split(",")[0]: RunRecord.read(p).status for p in sweep.rglob("metrics.json")}
    assert all(p.parent.parent == sweep for p in sweep.rglob("metrics.json"))  # one flat folder per job
    assert records == {
        "data.dev_fraction=abc": "failed",
        "data.dev_fraction=1.5": "failed",
        "data.dev_fraction=0.2": "complete",
    }
    assert "1 complete" in r.stdout and "2 failed" in r.stdout


@pytest.mark.slow
def job(sweep: Path, override: str) -> Path:
    """The job folder whose overrides hold `override` (folders are named by all of a job's overrides)."""
    (found,) = [d for d in sweep.iterdir() if d.is_dir() and override in d.name.split(",")]
    return found


def results(sweep: Path) -> dict[str, str]:
    """The jobs' files: the sweep's multirun.yaml is Hydra's description of its latest launch, rewritten
    by Hydra's sweeper on every launch (it holds the new paths), not a result; a job's train.log gets the
    line saying the job was skipped appended."""
    return {k: v for k, v in digest(sweep).items() if k != "multirun.yaml" and not k.endswith(".log")}


def test_sweeps_locked_corrupt_and_moved(tmp_path):
    args = ["-m", *TRAIN, "sweep_name=s", "seed=1,2"]
    r = script("train.py", *args, f"paths.log_dir={tmp_path}/a")
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "a" / "train" / "multiruns" / "s"
    # moved under another log dir: the same sweep, every job skipped
    shutil.move(tmp_path / "a", tmp_path / "b")
    sweep = tmp_path / "b" / "train" / "multiruns" / "s"
    before = results(sweep)
    r = script("train.py", *args, f"paths.log_dir={tmp_path}/b")
    assert r.returncode == 0 and "2 of them skipped" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert unchanged(before, results(sweep))
    # a corrupt metrics.json in one job: one line for it, the other skipped, nothing rewritten
    seed1, seed2 = job(sweep, "seed=1"), job(sweep, "seed=2")
    (seed1 / "metrics.json").write_text("{broken")
    before = results(sweep)
    r = script("train.py", *args, f"paths.log_dir={tmp_path}/b")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert any(f"{seed1}/metrics.json is not valid JSON" in line for line in r.stderr.splitlines()), r.stderr
    assert unchanged(before, results(sweep))
    # a concurrent sweep of the same name holds job seed=2's lock: this one skips it and says so
    (seed1 / "metrics.json").unlink()
    shutil.rmtree(seed2)
    seed2.mkdir()
    with exclusive(seed2 / ".lock", wait=False) as held:
        assert held
        r = script("train.py", *args, f"paths.log_dir={tmp_path}/b")
    # not a failure of this sweep: the other one trains it; this sweep completes the other job
    assert "Traceback" not in r.stderr and r.returncode == 0 and "1 complete" in r.stdout, r.stderr[-3000:]
    assert any(f"{seed2} is being trained by another process" in line for line in r.stderr.splitlines())
    assert "1 incomplete (1 being trained by another process)" in r.stdout  # in the summary, not missing
    assert RunRecord.read(seed1 / "metrics.json").status == "complete"
    assert not (seed2 / "metrics.json").exists()
