"""Demo data sources: espeak_emotion (generated), fashion_mnist (Debian idx), fortunes4 (Debian fortunes).

Fast: small generated sets and fixture files in the real on-disk formats; the installed Debian
files are read where the demo configs point (CI installs the packages: `make test`).
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from daamlab.errors import DaamlabError
from daamlab.sources import build_source
from daamlab.sources.espeak_emotion import plan_settings, plan_utterances

ROOT = Path(__file__).resolve().parents[1]


def demo_data_config(name: str, **overrides):
    cfg = OmegaConf.load(ROOT / "configs" / "data" / f"{name}.yaml")
    if "data" in cfg:  # a data config with run defaults of its own (`@package _global_`): its data node
        cfg = cfg.data
    return OmegaConf.merge(cfg, overrides)


def small_espeak(tmp_path: Path, **overrides):
    """2 voices x 4 classes x 1 clip in 2 voice groups: a few seconds of synthesis."""
    settings = {
        "root": str(tmp_path),
        "voices": ["en-us+m1", "en-gb+f3"],
        "sentences": ["The birch canoe slid on the smooth planks.", "Rice is often served in round bowls."],
        "clips_per_voice_and_class": 1,
        "num_groups": 2,
        **overrides,
    }
    return build_source(demo_data_config("espeak_emotion", **settings))


# --- espeak_emotion -----------------------------------------------------------------------------


def test_espeak_default_plan_is_large_balanced_and_voice_disjoint():
    source = build_source(demo_data_config("espeak_emotion", root="/nonexistent"))  # planning reads no files
    plan = source.plan
    assert len(plan) >= 1000 and source.num_items("all") == len(plan)
    assert source.class_names == ["neutral", "happy", "angry", "sad"]
    assert set(Counter(u.label for u in plan).values()) == {len(plan) // 4}
    groups_of_voice: dict[str, set[str]] = {}
    for u in plan:
        groups_of_voice.setdefault(u.voice, set()).add(u.group)
    assert all(len(g) == 1 for g in groups_of_voice.values())  # a voice never spans two folds
    voices_per_group = Counter(next(iter(g)) for g in groups_of_voice.values())
    assert sorted(voices_per_group) == [f"group{k}" for k in range(1, 6)]
    assert set(voices_per_group.values()) == {len(groups_of_voice) // 5}
    assert len({u.id for u in plan}) == len(plan)
    # every class says words from the same pool: the text carries no label
    sentences_by_class = {c: {u.text for u in plan if u.label == c} for c in source.class_names}
    assert len(set.intersection(*sentences_by_class.values())) >= 30


def test_espeak_plan_is_a_function_of_the_seed_and_classes_overlap():
    cfg = demo_data_config("espeak_emotion")
    settings = plan_settings(cfg)
    a, b = plan_utterances(**settings, seed=0), plan_utterances(**settings, seed=0)
    assert a == b
    assert plan_utterances(**settings, seed=1) != a
    pitch = {c: np.array([u.pitch for u in a if u.label == c]) for c in cfg.emotions}
    # per-utterance jitter: each class spreads, and neighbouring profiles overlap
    assert all(p.std() > 5 for p in pitch.values())
    assert pitch["neutral"].max() > pitch["angry"].min() and pitch["happy"].min() < pitch["angry"].max()


def test_espeak_version_follows_the_settings():
    base = build_source(demo_data_config("espeak_emotion", root="/nonexistent"))
    same = build_source(demo_data_config("espeak_emotion", root="/elsewhere"))
    other = build_source(demo_data_config("espeak_emotion", root="/nonexistent", seed=1))
    assert base.version == same.version  # where it is stored does not change what it is
    assert other.version != base.version


def test_espeak_generates_once_deterministically(tmp_path):
    first = small_espeak(tmp_path / "a")
    items = list(first.items("all"))
    assert len(items) == 8 and {i.group for i in items} == {"group1", "group2"}
    assert Counter(i.label for i in items) == {"neutral": 2, "happy": 2, "angry": 2, "sad": 2}
    for item in items:
        assert item.input.dtype == np.float32 and item.input.ndim == 1
        assert 0.5 < len(item.input) / 16000 < 6 and np.abs(item.input).max() <= 1.0
    wav = first.folder / f"{items[0].id}.wav"
    assert sf.info(str(wav)).samplerate == 16000
    manifest = (first.folder / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 8 and "espeak_ng" in manifest[0]
    # a second source over the same folder reuses the clips; another folder gets identical bytes
    stamp = wav.stat().st_mtime_ns
    again = small_espeak(tmp_path / "a")
    assert again.generate() == first.folder and wav.stat().st_mtime_ns == stamp
    elsewhere = small_espeak(tmp_path / "b")
    elsewhere.generate()
    assert (elsewhere.folder / wav.name).read_bytes() == wav.read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp folder left


def test_espeak_missing_program_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    source = small_espeak(tmp_path)
    with pytest.raises(DaamlabError, match="apt-get install espeak-ng"):
        list(source.items("all"))


def test_espeak_bad_settings_are_refused(tmp_path):
    with pytest.raises(DaamlabError, match="2 voices cannot fill 5"):
        small_espeak(tmp_path, num_groups=5)
    with pytest.raises(DaamlabError, match="one split 'all'"):
        list(small_espeak(tmp_path).items("train"))


# --- fashion_mnist ------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: 0, 0, dtype 0x08 (uint8), ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_fashion_mnist_reads_idx_and_takes_balanced_subsets(fashion_root):
    source = build_source(
        demo_data_config("fashion_mnist", root=str(fashion_root), train_size=25, test_size=None)
    )
    assert source.splits() == ["train", "test"] and source.num_items("test") == 20
    train = list(source.items("train"))
    assert len(train) == 25 and len({i.id for i in train}) == 25
    counts = Counter(i.label for i in train)
    assert len(counts) == 10 and set(counts.values()) == {2, 3}  # 25 = 5 classes x 3 + 5 x 2
    first = train[0]
    assert first.input.mode == "RGB" and first.input.size == (28, 28) and first.group == "train"
    row = int(first.id.split("_")[1])
    images = np.frombuffer(
        gzip.decompress((fashion_root / "train-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8
    )
    assert np.array_equal(np.asarray(first.input)[:, :, 0], images.reshape(-1, 28, 28)[row])
    assert first.label == source.class_names[row % 10]
    again = build_source(
        demo_data_config("fashion_mnist", root=str(fashion_root), train_size=25, test_size=None)
    )
    assert [i.id for i in again.items("train")] == [i.id for i in train] and again.version == source.version
    other = build_source(
        demo_data_config("fashion_mnist", root=str(fashion_root), train_size=25, subset_seed=1)
    )
    assert other.version != source.version


def test_fashion_mnist_installed_files_match_the_demo_config():
    source = build_source(demo_data_config("fashion_mnist"))
    assert source.num_items("train") == 3000 and source.num_items("test") == 1000
    assert Counter(i.label for i in source.items("test")) == {c: 100 for c in source.class_names}


def test_fashion_mnist_missing_files_name_the_package(tmp_path):
    with pytest.raises(DaamlabError, match="apt-get install dataset-fashion-mnist"):
        build_source(demo_data_config("fashion_mnist", root=str(tmp_path)))


# --- fortunes4 ----------------------------------------------------------------------------------


@pytest.fixture
def fortune_root(tmp_path):
    for topic in ("politics", "sports", "work", "science"):
        cookies = [f"A {topic} saying number {k},\n  spread over   two lines." for k in range(10)]
        cookies += ["Too short.", cookies[0]]  # one short cookie, one repeat
        (tmp_path / topic).write_text("\n%\n".join(cookies) + "\n%\n")
    return tmp_path


def test_fortunes4_parses_skips_and_splits_stratified(fortune_root):
    source = build_source(demo_data_config("fortunes4", root=str(fortune_root)))
    assert len(source.skipped) == 8
    assert Counter(reason.split()[0] for _, reason in source.skipped) == {"shorter": 4, "repeats": 4}
    train, test = list(source.items("train")), list(source.items("test"))
    assert Counter(i.label for i in test) == {t: 3 for t in source.class_names}  # 30% of 10 per topic
    assert Counter(i.label for i in train) == {t: 7 for t in source.class_names}
    assert not {i.id for i in train} & {i.id for i in test}
    assert test[0].input.startswith("A ") and "  " not in test[0].input and "\n" not in test[0].input
    again = build_source(demo_data_config("fortunes4", root=str(fortune_root)))
    assert [i.id for i in again.items("test")] == [i.id for i in test]
    reseeded = build_source(demo_data_config("fortunes4", root=str(fortune_root), seed=1))
    assert [i.id for i in reseeded.items("test")] != [i.id for i in test]
    assert reseeded.version != source.version


def test_fortunes4_installed_files_give_four_topics():
    source = build_source(demo_data_config("fortunes4"))
    total = source.num_items("train") + source.num_items("test")
    assert 2000 < total < 2200
    counts = Counter(i.label for i in source.items("test"))
    assert counts.keys() == {"politics", "sports", "work", "science"} and 30 < counts["sports"] < 60


def test_fortunes4_missing_files_name_the_package(tmp_path):
    with pytest.raises(DaamlabError, match="apt-get install fortunes"):
        build_source(demo_data_config("fortunes4", root=str(tmp_path)))


def test_default_run_is_daam_on_speech_demo_with_three_layers_per_head():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name="train")  # no overrides: `python train.py`
        mhsa = compose(config_name="train", overrides=["attention=mhsa"])
    GlobalHydra.instance().clear()
    assert (cfg.modality_name, cfg.data.name, cfg.encoder.name, cfg.attention.name) == (
        "speech_demo",
        "espeak_emotion",
        "whisper_base",
        "daam",
    )
    assert cfg.attention.num_heads == 2  # Whisper-base's 6 layers: 3 per head, the paper's
    assert mhsa.attention.num_heads == 8  # daam_heads does not touch the other variants
