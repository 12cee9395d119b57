"""Cache integrity under hostile input: a damaged part is extracted again (never merged) and the resumed
cache is byte-identical to an uninterrupted one; a malformed manifest or an unusable cache path is one
line, and a refused cache is left byte for byte as it was."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from daamlab.cli import run_cli
from omegaconf import open_dict

from daamlab.errors import DaamlabError
from daamlab.features import cached_feature_set, store
from daamlab.features import extract as extract_module
from daamlab.features.extract import build_cache, extract
from tests.test_cache import extract_cfg, files, load


class Killed(BaseException):
    """Stands in for SIGKILL in the middle of an extraction."""


@pytest.fixture(autouse=True, scope="module")
def one_thread_module():
    """Reference and resumed caches must use the same thread count, or their float sums (and bytes) differ."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted build: train parts 0, 1, 2 (8 + 8 + 3 items), test part 0 (5 items)."""
    return build_cache(extract_cfg(tmp_path_factory.mktemp("whole")))


def killed_after(tmp_path_factory, name: str, target: str, after: int) -> Path:
    """The cache directory of an extraction killed at the `after`+1-th call of store.`target`."""
    root = tmp_path_factory.mktemp(name)
    original, calls = getattr(store, target), []

    def dies(*args, **kwargs):
        if len(calls) == after:
            raise Killed
        calls.append(1)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, target, dies)
        with pytest.raises(Killed):
            build_cache(extract_cfg(root))
    (directory,) = [d for d in root.iterdir() if d.is_dir()]
    assert not (directory / store.MANIFEST).exists()
    return directory


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """Killed after three parts: the train split's parts are on disk, the test split's is not."""
    return killed_after(tmp_path_factory, "killed", "write_part", 3)


@pytest.fixture(scope="module")
def unmerged(tmp_path_factory) -> Path:
    """Killed as the merge began: every part is on disk, no split file or manifest yet."""
    return killed_after(tmp_path_factory, "unmerged", "merge", 0)


def resume(directory: Path, monkeypatch, caplog) -> int:
    """Rerun the extraction of `directory`; the number of parts it encoded."""
    encoded, original = [], extract_module.encode_part
    monkeypatch.setattr(extract_module, "encode_part", lambda *a, **k: encoded.append(1) or original(*a, **k))
    with caplog.at_level(logging.WARNING, logger="daamlab.features"):
        build_cache(extract_cfg(directory.parent))
    return len(encoded)


def flip_byte(path: Path, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0xFF
    path.write_bytes(bytes(raw))


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


DAMAGE = {
    "npy_flipped_byte": lambda npy, meta: flip_byte(npy),
    "npy_flipped_header": lambda npy, meta: flip_byte(npy, 0.05),
    "npy_truncated": lambda npy, meta: npy.write_bytes(npy.read_bytes()[:-100]),
    "npy_missing": lambda npy, meta: npy.unlink(),
    "npy_not_numpy": lambda npy, meta: npy.write_text("not an array\n"),
    "json_truncated": lambda npy, meta: meta.write_bytes(meta.read_bytes()[:40]),
    "json_not_utf8": lambda npy, meta: meta.write_bytes(b"\xff\xfe\x00garbage"),
    "json_a_list": lambda npy, meta: meta.write_text("[]"),
    "json_empty_object": lambda npy, meta: meta.write_text("{}"),
    "json_no_checksum": lambda npy, meta: edit_json(meta, lambda r: r.pop("record_xxh3_128")),
    "json_label_edited": lambda npy, meta: edit_json(meta, lambda r: r["rows"][0].update(label="other")),
    "json_npy_checksum_edited": lambda npy, meta: edit_json(
        meta, lambda r: r["npy"].update(xxh3_128="0" * 32)
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_part_is_extracted_again_and_the_cache_matches_an_uninterrupted_one(
    reference, interrupted, tmp_path, monkeypatch, caplog, damage
):
    directory = tmp_path / interrupted.name
    shutil.copytree(interrupted, directory)
    npy, meta = store.part_paths(directory, "train", 1)
    DAMAGE[damage](npy, meta)
    assert resume(directory, monkeypatch, caplog) == 2  # the damaged part and the test split's part
    assert files(directory) == files(reference)  # byte for byte: nothing of the damaged part was merged
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"part {npy.with_suffix('')} is damaged (" in w for w in warnings), warnings
    assert any(w.startswith(f"1 damaged parts of {directory} were found") for w in warnings), warnings


def test_several_damaged_parts_are_counted(reference, interrupted, tmp_path, monkeypatch, caplog):
    directory = tmp_path / interrupted.name
    shutil.copytree(interrupted, directory)
    flip_byte(store.part_paths(directory, "train", 0)[0])
    store.part_paths(directory, "train", 2)[1].write_text('{"fingerprint": ')
    assert resume(directory, monkeypatch, caplog) == 3
    assert files(directory) == files(reference)
    assert any(r.getMessage().startswith("2 damaged parts of") for r in caplog.records)


def test_an_undamaged_resume_redoes_nothing_and_logs_no_damage(
    reference, interrupted, tmp_path, monkeypatch, caplog
):
    directory = tmp_path / interrupted.name
    shutil.copytree(interrupted, directory)
    assert resume(directory, monkeypatch, caplog) == 1
    assert files(directory) == files(reference)
    assert not any(" damaged " in r.getMessage() for r in caplog.records)


def test_a_part_changed_after_it_was_checked_is_never_merged(
    reference, unmerged, tmp_path, monkeypatch, caplog
):
    directory = tmp_path / unmerged.name
    shutil.copytree(unmerged, directory)
    cfg = extract_cfg(tmp_path)
    fp = directory.name
    records = {
        split: [store.read_part_meta(directory, split, i, fp, 8) for i in range(n)]
        for split, n in (("train", 3), ("test", 1))
    }
    assert all(r is not None for rs in records.values() for r in rs)
    path = store.part_paths(directory, "train", 1)[0]
    flip_byte(path)  # between the check and the merge
    manifest = json.loads((reference / store.MANIFEST).read_text())
    with pytest.raises(DaamlabError, match=f"{path} changed after it was checked"):
        store.merge(
            directory,
            records,
            {k: manifest[k] for k in ("format", "fingerprint", "key", "source", "class_names")},
        )
    assert not (directory / store.MANIFEST).exists()
    assert resume(directory, monkeypatch, caplog) == 1  # the rerun extracts that part again
    assert files(directory) == files(reference) and load(cfg).splits["train"].features.shape[0] == 19


def malformed(manifest: dict) -> dict[str, object]:
    """Manifests merge() never writes, each with what the refusal must say."""
    splits = manifest["splits"]
    no_files = {**splits, "train": {"size": 19}}
    test_files = {k: v for k, v in splits["test"]["files"].items() if k != "labels.npy"}
    no_labels = {**splits, "test": {**splits["test"], "files": test_files}}
    return {
        "a_list": ([], "it is a list, not an object"),
        "empty_object": ({}, "it has no 'format'"),
        "a_string": ("cache", "it is a string, not an object"),
        "null": (None, "it is null, not an object"),
        "no_splits_key": ({k: v for k, v in manifest.items() if k != "splits"}, "it has no 'splits'"),
        "no_splits": ({**manifest, "splits": {}}, "it lists no splits"),
        "splits_a_list": ({**manifest, "splits": ["train"]}, "'splits' is a list, not an object"),
        "layers_a_string": (
            {**manifest, "num_layers": "4"},
            "'num_layers' is a string, not a whole number",
        ),
        "layers_a_bool": (
            {**manifest, "num_layers": True},
            "'num_layers' is true/false, not a whole number",
        ),
        "no_class_names": ({**manifest, "class_names": []}, "'class_names' is not a list of names"),
        "split_escapes": (
            {**manifest, "splits": {"../train": splits["train"]}},
            "split '../train' is not a directory name",
        ),
        "split_no_files": ({**manifest, "splits": no_files}, "'splits.train' has no 'files'"),
        "split_no_labels": (
            {**manifest, "splits": no_labels},
            "'splits.test.files' has no record of labels.npy",
        ),
        "skipped_a_number": ({**manifest, "skipped": 2}, "'skipped' is a whole number, not an object"),
    }


CASES = sorted(malformed({"splits": {"train": {}, "test": {"files": {}}}}))  # the names only


@pytest.mark.parametrize("case", CASES)
def test_malformed_manifest_is_one_line_and_the_cache_is_left_as_it_was(reference, tmp_path, case):
    directory = tmp_path / reference.name
    shutil.copytree(reference, directory)
    path = directory / store.MANIFEST
    payload, problem = malformed(json.loads(path.read_text()))[case]
    path.write_text(json.dumps(payload))
    before = files(directory)
    cfg = extract_cfg(tmp_path)
    message = f"{path} is not a feature cache manifest: {problem}; delete {directory} and extract again"
    for attempt in (load, build_cache):  # train.py's read, and its (and extract.py's) build step
        with pytest.raises(DaamlabError) as info:
            attempt(cfg)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert files(directory) == before  # refused, never rebuilt or rewritten


def test_extract_py_refuses_a_malformed_manifest_with_exit_2(reference, tmp_path, capsys):
    directory = tmp_path / reference.name
    shutil.copytree(reference, directory)
    (directory / store.MANIFEST).write_text("[]")
    before = files(directory)
    with pytest.raises(SystemExit) as info:
        run_cli(extract, extract_cfg(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].startswith(f"daamlab: error: {directory / store.MANIFEST} is not")
    assert files(directory) == before


def test_cache_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import ROOT
    from tests.test_cache import SMALL

    target = tmp_path / "not_a_dir"
    target.write_text("precious\n")
    monkeypatch.setenv("DAAMLAB_CACHE", str(target))
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("extract", overrides=SMALL)
    GlobalHydra.instance().clear()
    message = f"the feature cache {target}/.* cannot be made: {target} is a file, not a directory"
    with pytest.raises(DaamlabError, match=message):
        build_cache(cfg)
    read, _ = cached_feature_set(cfg)
    with pytest.raises(DaamlabError, match=message):
        read()
    with pytest.raises(SystemExit) as info:
        run_cli(extract, cfg)
    assert info.value.code == 2 and "is a file, not a directory" in capsys.readouterr().err
    with open_dict(cfg):
        cfg.paths.cache_dir = str(target / "deeper" / "cache")  # a path through the file: ENOTDIR
    with pytest.raises(DaamlabError, match=f"{target} is a file, not a directory"):
        build_cache(cfg)
    assert target.read_text() == "precious\n"


def test_unwritable_cache_dir_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):  # what a read-only or foreign directory answers (tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(store.tempfile, "mkstemp", denied)
    with pytest.raises(
        DaamlabError, match=f"cannot write the feature cache under {tmp_path} \\(Permission denied\\)"
    ):
        build_cache(extract_cfg(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_finished_cache_still_reads_from_an_unwritable_dir(reference, monkeypatch):
    """A shared, read-only cache: reading it writes nothing, so it needs no write permission."""
    monkeypatch.setattr(store.tempfile, "mkstemp", lambda *a, **k: pytest.fail("wrote into a finished cache"))
    cfg = extract_cfg(reference.parent)
    assert build_cache(cfg) == reference
    assert load(cfg).splits["test"].features.shape[0] == 5
