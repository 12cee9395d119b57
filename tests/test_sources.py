"""The paper's data sources on miniature copies in their real on-disk formats (daamlab.sources.fixtures).

IEMOCAP: class mapping, dropped labels, chunking, resampling and mix-down, skipped inputs, folds.
CIFAR-100 / AG News: HF datasets from save_to_disk folders and hub-layout parquet, conversions, skips.
Bad input: one DaamlabError message that says what was expected where.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from daamlab.data.datamodule import FeatureDataModule
from daamlab.errors import DaamlabError
from daamlab.features.featureset import FeatureSet, FeatureSplit
from daamlab.sources import build_source
from daamlab.sources.fixtures import (
    AGNEWS_CLASSES,
    CIFAR100_COARSE,
    CIFAR100_FINE,
    LONG_SECONDS,
    OTHER_RATE,
    TONE_HZ,
    write_agnews,
    write_cifar100,
    write_iemocap,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"
MERGE = {"exc": "hap"}
KEPT = ["neu", "hap", "ang", "sad"]


def data_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    return write_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def iemocap_items(iemocap):
    source = build_source(data_cfg("iemocap", root=str(iemocap.root)))
    return source, list(source.items("all"))


# ---- IEMOCAP: protocol ------------------------------------------------------------------------------------


def test_iemocap_keeps_four_classes_merges_exc_and_drops_the_rest(iemocap, iemocap_items):
    source, items = iemocap_items
    assert source.class_names == KEPT
    by_turn = {t.turn: t for t in iemocap.turns}
    for item in items:
        assert item.label == MERGE.get(by_turn[item.id].emotion, by_turn[item.id].emotion)
    yielded = {item.id for item in items}
    exc_turns = {t.turn for t in iemocap.turns if t.emotion == "exc"}
    assert exc_turns and exc_turns <= yielded  # exc is kept, as hap
    outside = [t for t in iemocap.turns if MERGE.get(t.emotion, t.emotion) not in KEPT]
    assert not {t.turn for t in outside} & yielded
    assert source.dropped == Counter(t.emotion for t in outside) and set(source.dropped) == {
        "fru",
        "xxx",
        "sur",
    }
    # the per-evaluator files under EmoEvaluation/Categorical etc. add no label lines: one utterance per turn
    kept = [t for t in iemocap.turns if MERGE.get(t.emotion, t.emotion) in KEPT]
    assert len(source.utterances) == len(kept)


def test_iemocap_long_utterance_is_cut_into_5s_chunks_that_share_its_id(iemocap, iemocap_items):
    _, items = iemocap_items
    long_turn = iemocap.turn(seconds=LONG_SECONDS)
    chunks = [item for item in items if item.id == long_turn.turn]
    assert len(chunks) == math.ceil(LONG_SECONDS / 5) == 3
    assert [c.chunk for c in chunks] == [0, 1, 2]
    assert [len(c.input) for c in chunks] == [80_000, 80_000, round((LONG_SECONDS - 10) * 16_000)]
    assert {c.group for c in chunks} == {long_turn.session} and {c.label for c in chunks} == {"neu"}
    whole, rate = sf.read(long_turn.wav, dtype="float32")
    assert rate == 16_000
    np.testing.assert_array_equal(np.concatenate([c.input for c in chunks]), whole)
    # every other utterance is shorter than 5 s: one chunk each
    assert all(item.chunk == 0 for item in items if item.id != long_turn.turn)


@pytest.mark.parametrize(("seconds", "expected"), [(0, [184_000]), (2.0, [32_000] * 5 + [24_000])])
def test_iemocap_chunk_length_is_configurable_and_0_keeps_utterances_whole(iemocap, seconds, expected):
    source = build_source(data_cfg("iemocap", root=str(iemocap.root), chunk_seconds=seconds))
    long_turn = iemocap.turn(seconds=LONG_SECONDS).turn
    lengths = [len(item.input) for item in source.items("all") if item.id == long_turn]
    assert lengths == expected


def test_iemocap_resamples_other_rates_to_16k_and_mixes_stereo_down(iemocap, iemocap_items):
    _, items = iemocap_items
    by_id = {item.id: item.input for item in items}
    resampled = iemocap.turn(rate=OTHER_RATE)
    wave = by_id[resampled.turn]
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == round(resampled.seconds * 16_000)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    peak_hz = np.argmax(spectrum) * 16_000 / len(wave)
    assert abs(peak_hz - TONE_HZ) < 16_000 / len(wave) + 1  # the tone keeps its pitch: within one FFT bin
    stereo = iemocap.turn(channels=2)
    left_right, rate = sf.read(stereo.wav, dtype="float32")
    assert rate == 16_000 and left_right.shape[1] == 2
    np.testing.assert_allclose(by_id[stereo.turn], left_right.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(by_id[stereo.turn], 0.75 * left_right[:, 0], atol=1e-4)


def test_iemocap_empty_and_unreadable_wavs_are_skipped_counted_and_listed(iemocap, iemocap_items):
    source, items = iemocap_items
    empty, broken = iemocap.turn(problem="empty"), iemocap.turn(problem="unreadable")
    assert dict(source.skipped) == {
        str(empty.wav): "empty wav (0 samples)",
        str(broken.wav): "unreadable wav (Format not recognised.)",
    }
    assert not {empty.turn, broken.turn} & {item.id for item in items}
    # the class counts are of what was yielded
    counted = Counter((item.group, item.label) for item in items)
    assert {(g, c): n for g, per in source.class_counts.items() for c, n in per.items() if n} == dict(counted)
    assert source.class_counts[empty.session]["neu"] == 1  # of 2 neu turns, the empty one is gone
    assert source.num_items("all") == len(items)  # planned from wav headers, no audio decoded


def test_iemocap_unparseable_label_line_is_listed_not_dropped_silently(tmp_path):
    fixture = write_iemocap(tmp_path, with_problems=False)
    label_file = next((fixture.root / "Session4" / "dialog" / "EmoEvaluation").glob("*impro*.txt"))
    lines = label_file.read_text().splitlines(keepends=True)
    bad = next(i for i, line in enumerate(lines) if line.startswith("["))
    lines[bad] = "[2.0000 - 2.4000]\tSes04F_impro01_F000\n"  # emotion and VAD lost
    label_file.write_text("".join(lines))
    source = build_source(data_cfg("iemocap", root=str(fixture.root)))
    assert "Ses04F_impro01_F000" not in {u.turn for u in source.utterances}
    assert source.skipped == []  # filled while items() runs, where the cache collects it
    items = list(source.items("all"))
    assert source.skipped == [(f"{label_file}:{bad + 1}", "unparseable label line")]
    # a second pass appends its own entries (the list only grows; a reader takes those after its start)
    seen = len(source.skipped)
    assert len(list(source.items("all"))) == len(items) and source.skipped[seen:] == source.skipped[:seen]


def test_iemocap_version_follows_protocol_and_files(iemocap, tmp_path):
    version = build_source(data_cfg("iemocap", root=str(iemocap.root))).version
    assert build_source(data_cfg("iemocap", root=str(iemocap.root))).version == version
    assert build_source(data_cfg("iemocap", root=str(iemocap.root), chunk_seconds=3.0)).version != version
    copy = write_iemocap(tmp_path)  # the same release elsewhere shares the cache
    assert build_source(data_cfg("iemocap", root=str(copy.root))).version == version
    copy.turn(seconds=LONG_SECONDS).wav.write_bytes(b"")
    assert build_source(data_cfg("iemocap", root=str(copy.root))).version != version


# ---- IEMOCAP: folds over the items (the datamodule's leave-one-session-out) ------------------------------


def feature_set(items, class_names) -> FeatureSet:
    n = len(items)
    features = np.arange(n, dtype=np.float32).reshape(n, 1, 1)  # row i carries i: rows are traceable
    split = FeatureSplit(
        features,
        np.array([class_names.index(item.label) for item in items], dtype=np.int64),
        np.array([item.id for item in items]),
        np.array([item.group for item in items]),
    )
    return FeatureSet("iemocap", list(class_names), {"all": split})


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_fold_k_tests_on_session_k_and_no_utterance_crosses_splits(iemocap_items, fold):
    source, items = iemocap_items
    data = feature_set(items, source.class_names)
    sessions = [f"Session{k}" for k in range(1, 6)]
    dm = FeatureDataModule(lambda: data, fold=fold, fold_groups=sessions)
    dm.setup("fit")
    groups = data.splits["all"].groups
    test_rows, train_rows = dm.test_set.rows, dm.train_set.rows
    assert set(groups[test_rows]) == {f"Session{fold}"}
    assert len(test_rows) == sum(item.group == f"Session{fold}" for item in items)  # exactly its session
    assert f"Session{fold}" not in set(groups[train_rows]) and len(train_rows) + len(test_rows) == len(items)
    ids = data.splits["all"].ids
    assert not set(ids[train_rows]) & set(ids[test_rows])
    assert dm.split_summary["test"]["groups"] == [f"Session{fold}"]
    assert sum(dm.split_summary["test"]["classes"].values()) == len(test_rows)


def test_dev_fraction_holds_out_whole_training_utterances(iemocap, iemocap_items):
    source, items = iemocap_items
    data = feature_set(items, source.class_names)
    dm = FeatureDataModule(lambda: data, fold=3, dev_fraction=0.2, split_seed=0)
    dm.setup("fit")
    ids, groups = data.splits["all"].ids, data.splits["all"].groups
    train, dev, test = (set(ids[s.rows]) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert not train & dev and not dev & test and "Session3" not in set(groups[dm.val_set.rows])
    train_utterances = {item.id for item in items if item.group != "Session3"}
    assert len(dev) == round(0.2 * len(train_utterances)) and train | dev == train_utterances
    long_turn = iemocap.turn(seconds=LONG_SECONDS).turn  # its 3 chunks sit on one side
    chunk_rows = np.flatnonzero(ids == long_turn)
    in_dev = np.isin(chunk_rows, dm.val_set.rows)
    assert in_dev.all() or not in_dev.any()


@pytest.mark.parametrize(("fold", "shown"), [(6, "6"), (0, "0"), ("two", "'two'")])
def test_unknown_fold_says_which_folds_exist(iemocap_items, fold, shown):
    source, items = iemocap_items
    data = feature_set(items, source.class_names)
    dm = FeatureDataModule(lambda: data, fold=fold)
    with pytest.raises(
        DaamlabError, match=rf"data.fold={shown} is not a fold: 'iemocap' has 5 folds .*data.fold=1..5"
    ):
        dm.setup("fit")


def test_fold_groups_that_miss_a_session_are_refused(iemocap_items):
    source, items = iemocap_items
    dm = FeatureDataModule(lambda: feature_set(items, source.class_names), fold=1, fold_groups=["Session1"])
    with pytest.raises(DaamlabError, match=r"groups \['Session2', .*\] that data.fold_groups"):
        dm.setup("fit")


# ---- IEMOCAP: bad input -----------------------------------------------------------------------------------


def test_iemocap_without_root_says_where_to_get_it_and_which_key_to_set():
    with pytest.raises(
        DaamlabError, match=r"data.root is not set.*sail.usc.edu/iemocap.*data.root=/path/to/"
    ):
        build_source(data_cfg("iemocap", root=None))


def test_iemocap_missing_root_or_wrong_layout_says_what_was_expected_where(tmp_path, iemocap):
    with pytest.raises(DaamlabError, match=r"data.root=.*nowhere is not a folder"):
        build_source(data_cfg("iemocap", root=str(tmp_path / "nowhere")))
    parent = iemocap.root.parent  # one level too high: a hint at the right folder
    with pytest.raises(
        DaamlabError, match=r"expected the folders Session1, .*did you mean data.root=.*IEMOCAP_full_release"
    ):
        build_source(data_cfg("iemocap", root=str(parent)))
    partial = write_iemocap(tmp_path / "partial", sessions=3, with_problems=False)
    with pytest.raises(
        DaamlabError, match=r"missing Session4, Session5 \(found: Session1, Session2, Session3\)"
    ):
        build_source(data_cfg("iemocap", root=str(partial.root)))
    # a session without its label folder
    (partial.root / "Session2" / "dialog" / "EmoEvaluation").rename(
        partial.root / "Session2" / "dialog" / "x"
    )
    cfg = data_cfg("iemocap", root=str(partial.root), sessions=["Session1", "Session2"])
    with pytest.raises(
        DaamlabError, match=r"Session2/dialog/EmoEvaluation is missing: .*sentences/wav/<dialog>"
    ):
        build_source(cfg)


def test_iemocap_label_files_without_label_lines_are_a_layout_error(tmp_path):
    fixture = write_iemocap(tmp_path, sessions=1, with_problems=False)
    for path in (fixture.root / "Session1" / "dialog" / "EmoEvaluation").glob("*.txt"):
        path.write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")
    with pytest.raises(DaamlabError, match=r"hold no label lines; expected lines like '\[6.2901 - 8.2357\]"):
        build_source(data_cfg("iemocap", root=str(fixture.root), sessions=["Session1"]))


def test_iemocap_missing_wav_is_skipped_and_listed(tmp_path):
    fixture = write_iemocap(tmp_path, sessions=1, with_problems=False)
    gone = fixture.turn(session="Session1", emotion="sad", dialog="Ses01F_impro01")
    gone.wav.unlink()
    source = build_source(data_cfg("iemocap", root=str(fixture.root), sessions=["Session1"]))
    items = list(source.items("all"))
    assert source.skipped == [(str(gone.wav), "missing wav file")]
    assert gone.turn not in {item.id for item in items} and source.num_items("all") == len(items)


# ---- CIFAR-100 and AG News through HF datasets ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["disk", "parquet"])
def test_cifar100_reads_images_as_rgb_converting_grayscale_and_rgba(tmp_path, fmt):
    path = write_cifar100(tmp_path / "cifar", fmt=fmt, train=12, test=6)
    source = build_source(data_cfg("cifar100", path=str(path)))
    assert source.kind == "image" and source.splits() == ["train", "test"]
    assert source.class_names == CIFAR100_FINE and len(source.class_names) == 100
    assert source.num_items("train") == 12 and source.num_items("test") == 6
    train = list(source.items("train"))
    assert source.skipped == [("train-00002", "unreadable image (Truncated File Read)")]
    assert [item.id for item in train] == [f"train-{i:05d}" for i in range(12) if i != 2]
    assert all(item.input.mode == "RGB" and item.input.size == (32, 32) for item in train)
    assert source.converted == Counter({"L": 1, "RGBA": 1})
    gray, rgba = np.asarray(train[0].input), np.asarray(train[1].input)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert (rgba[:16] == 255).all()  # fully transparent pixels become white
    assert [item.label for item in train[2:4]] == [CIFAR100_FINE[3], CIFAR100_FINE[4]]
    assert {item.group for item in train} == {"train"}
    test = list(source.items("test"))
    assert len(test) == 6 and source.class_counts["test"]["apple"] == 1
    assert sum(source.class_counts["train"].values()) == 11


def test_cifar100_coarse_labels_by_config(tmp_path):
    path = write_cifar100(tmp_path / "cifar", with_problems=False)
    source = build_source(data_cfg("cifar100", path=str(path), label_column="coarse_label"))
    assert source.class_names == CIFAR100_COARSE
    assert [item.label for item in source.items("test")][:2] == CIFAR100_COARSE[:2]


@pytest.mark.parametrize("fmt", ["disk", "parquet"])
def test_agnews_yields_texts_and_skips_empty_ones(tmp_path, fmt):
    path = write_agnews(tmp_path / "ag", fmt=fmt, train=12, test=8)
    source = build_source(data_cfg("agnews", path=str(path)))
    assert source.kind == "text" and source.class_names == AGNEWS_CLASSES
    train = list(source.items("train"))
    assert source.skipped == [("train-00000", "empty text"), ("train-00001", "empty text")]
    assert len(train) == 10 and all(isinstance(item.input, str) and item.input.strip() for item in train)
    assert train[0].label == AGNEWS_CLASSES[2] and train[0].input.endswith("(2)")
    test = list(source.items("test"))
    assert [item.label for item in test] == [AGNEWS_CLASSES[i % 4] for i in range(8)]
    assert source.class_counts == {
        "train": {"World": 2, "Sports": 2, "Business": 3, "Sci/Tech": 3},
        "test": dict.fromkeys(AGNEWS_CLASSES, 2),
    }


def test_hub_source_version_is_stable_and_follows_data(tmp_path):
    a = write_agnews(tmp_path / "a", with_problems=False)
    b = write_agnews(tmp_path / "b", with_problems=True)
    version = build_source(data_cfg("agnews", path=str(a))).version
    assert build_source(data_cfg("agnews", path=str(a))).version == version
    assert build_source(data_cfg("agnews", path=str(b))).version != version


def test_hub_sources_bad_input_messages(tmp_path):
    with pytest.raises(
        DaamlabError, match=r"data.path=.*missing does not exist: point it at a local AG News"
    ):
        build_source(data_cfg("agnews", path=str(tmp_path / "missing")))
    # offline (tests set HF_HUB_OFFLINE=1) and not in the HF cache
    with pytest.raises(
        DaamlabError, match=r"could not load CIFAR-100 from the hub .*HF_HUB_OFFLINE=1.*data.path="
    ):
        build_source(data_cfg("cifar100", hub_id="daamlab-tests/no-such-dataset"))
    path = write_agnews(tmp_path / "ag", with_problems=False)
    with pytest.raises(DaamlabError, match=r"has no column 'title' \(columns: text, label\)"):
        build_source(data_cfg("agnews", path=str(path), input_column="title"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DaamlabError, match=r"could not be read as AG News data"):
        build_source(data_cfg("agnews", path=str(tmp_path / "empty")))


def test_hub_source_without_a_test_split_is_refused(tmp_path):
    from datasets import load_from_disk

    path = write_agnews(tmp_path / "ag", with_problems=False)
    only_train = load_from_disk(str(path))
    del only_train["test"]
    only_train.save_to_disk(str(tmp_path / "train_only"))
    with pytest.raises(DaamlabError, match=r"holds the splits \['train'\]; AG News needs 'train' and 'test'"):
        build_source(data_cfg("agnews", path=str(tmp_path / "train_only")))
