"""Your own data with no code (issue 17): folders, tables and HF datasets through the generic sources,
trained end to end on the tiny encoders; the shared protocol (folds, splits, classes, skips); a source
from outside the package; data=... without a modality keeps no preset of the demo's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf, open_dict
from PIL import Image

from daamlab.attention import auto_heads
from daamlab.cli import run_cli
from daamlab.record import RunRecord
from daamlab.sources import build_source
from daamlab.sources.generic import Protocol, Row, assign, fold_of_groups
from daamlab.training import train
from tests.conftest import ROOT, run_script

FAST = [
    "decoder=linear",
    "trainer.max_epochs=2",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "encoder.device=cpu",
]
CLASSES = ["angry", "calm"]


def tone(seconds: float, rate: int, hz: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_audio_folder(root: Path) -> dict[str, int]:
    """Class folders at mixed rates, channel counts and formats, plus what must be skipped."""
    formats = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 8000, 2)]
    for c, label in enumerate(CLASSES):
        for i in range(6):
            ext, rate, channels = formats[i % len(formats)]
            folder = root / label / ("nested" if i == 5 else "")  # files in subfolders keep the class
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{label}_{i}.{ext}", tone(0.3 + 0.1 * i, rate, 300 + 400 * c, channels), rate)
    (root / "calm" / ".DS_Store").write_bytes(b"\0\1")
    (root / "calm" / "._calm_0.wav").write_bytes(b"AppleDouble")
    (root / "angry" / "broken.wav").write_bytes(b"not a wav")
    (root / "README.txt").write_text("my recordings")
    return {"rows": 12, "hidden": 2, "unreadable": 1, "outside": 1}


def write_image_folder(root: Path) -> None:
    """metadata.csv with a split column; images of mixed sizes and modes; a missing listed file."""
    root.mkdir(parents=True)
    sizes, modes = [(40, 24), (17, 33), (64, 64), (25, 50)], ["RGB", "L", "RGBA", "P"]
    lines = ["file_name,label,split"]
    rng = np.random.default_rng(0)
    for i in range(16):
        label, split = (
            ("cat", "dog")[i % 2],
            ("train", "train", "test", "validation")[i % 4] if i >= 4 else "train",
        )
        w, h = sizes[i % 4]
        pixels = (rng.random((h, w, 3)) * 80 + (160 if label == "cat" else 0)).astype(np.uint8)
        image = Image.fromarray(pixels).convert(modes[i % 4])
        (root / "img").mkdir(exist_ok=True)
        image.save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png, {label} ,{split}")  # labels with surrounding whitespace
    lines.append("img/missing.png,cat,train")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")


def write_texts(path: Path, kind: str) -> None:
    words = {"sport": "goal match team score", "tech": "chip code laptop server"}
    records = []
    for i in range(20):
        label = ("sport", "tech")[i % 2]
        records.append({"text": f"{words[label]} {i}", "label": label, "author": f"a{i % 5}"})
    records.append({"text": "   ", "label": "tech", "author": "a0"})  # empty: skipped
    if kind == "csv":
        path.write_text(
            "text,label,author\n" + "".join(f"{r['text']},{r['label']},{r['author']}\n" for r in records)
        )
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))


def train_cli(compose, out: Path, overrides: list[str]) -> dict:
    cfg = compose(
        ["modality=none", *overrides, f"paths.cache_dir={out / 'cache'}", *FAST]
    )  # no toy preset (conftest)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
    run_cli(train, cfg)
    return RunRecord.read(out / "run" / "metrics.json")


def cache_manifest(out: Path) -> dict:
    (manifest,) = (out / "cache").glob("*/manifest.json")
    return json.loads(manifest.read_text())


# ---- end to end, one per layout ----


def test_audio_folder_trains_with_mixed_rates_channels_and_formats(compose, tmp_path, one_thread):
    expect = write_audio_folder(tmp_path / "birdsong")
    metrics = train_cli(
        compose, tmp_path, ["data=audio_folder", f"data.root={tmp_path / 'birdsong'}", "encoder=tiny_wavlm"]
    )
    assert metrics.status == "complete"
    assert metrics.data == metrics.modality == "birdsong"  # named after the user's folder, not speech_demo
    skipped = expect["hidden"] + expect["unreadable"] + expect["outside"]
    assert metrics.data_info["skipped"] == skipped
    reasons = Counter(
        entry["reason"].split(" (")[0] for entry in cache_manifest(tmp_path)["skipped"]["items"]
    )
    assert reasons == {"hidden file": 2, "unreadable audio": 1, "not inside a class folder": 1}
    total = sum(s["rows"] for s in (metrics.splits["train"], metrics.splits["test"]))
    assert total == expect["rows"]  # every readable file, each shorter than one 5 s chunk
    assert metrics.splits["test"]["classes"]["calm"] == 1  # stratified: 0.2 of calm's 6 files


def test_image_folder_metadata_with_mixed_sizes_and_splits(compose, tmp_path, one_thread):
    write_image_folder(tmp_path / "pets")
    metrics = train_cli(
        compose, tmp_path, ["data=image_folder", f"data.root={tmp_path / 'pets'}", "encoder=tiny_beit"]
    )
    assert metrics.data == "pets" and metrics.data_info["skipped"] == 1  # the missing listed file
    splits = metrics.splits
    assert (splits["train"]["rows"], splits["val"]["rows"], splits["test"]["rows"]) == (10, 3, 3)
    assert splits["val"]["split"] == "validation"  # its own, not the test split
    assert set(metrics.splits["train"]["classes"]) == {"cat", "dog"}  # whitespace stripped


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_text_table_csv_and_jsonl_with_group_folds(compose, tmp_path, one_thread, kind):
    table = tmp_path / f"reviews.{kind}"
    write_texts(table, kind)
    overrides = ["data=text_table", f"data.path={table}", "encoder=tiny_llama"]
    metrics = train_cli(
        compose, tmp_path, [*overrides, "data.group_column=author", "data.num_folds=5", "data.fold=2"]
    )
    assert metrics.data == "reviews" and metrics.data_info["skipped"] == 1  # the empty text
    assert metrics.splits["test"]["groups"] == ["fold2"]
    assert metrics.splits["test"]["rows"] == 4 and metrics.splits["train"]["rows"] == 16


def test_local_hf_dataset_with_one_split_gets_a_stratified_split(compose, tmp_path, one_thread):
    import datasets

    texts = [f"{'up high' if i % 2 else 'down low'} {i}" for i in range(20)]
    labels = [i % 2 for i in range(20)]
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["down", "up"])}
    )
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"sentence": texts, "y": labels}, features=features)}
    ).save_to_disk(str(tmp_path / "moods"))
    metrics = train_cli(
        compose,
        tmp_path,
        [
            "data=hf_dataset",
            f"data.dataset={tmp_path / 'moods'}",
            "data.input_column=sentence",
            "data.label_column=y",
            "encoder=tiny_llama",
        ],
    )
    assert metrics.data == "moods"
    assert metrics.splits["test"]["classes"] == {
        "down": 2,
        "up": 2,
    }  # ClassLabel names; 0.2 of 10 per class


def test_own_source_from_the_docs_trains_from_outside_the_package(tmp_path):
    """The docs' example, as written there (docs/my_sources.py is the page's code block), from outside the package."""
    code = (ROOT / "docs" / "my_sources.py").read_text()
    assert f"```python\n{code}```" in (ROOT / "docs" / "own-data.md").read_text()
    assert len(code.splitlines()) <= 25
    (tmp_path / "my_sources.py").write_text(code)
    result = run_script(
        "train.py",
        "modality=none",  # run_script adds the toy preset otherwise (conftest)
        "data=custom",
        f"data.source={tmp_path / 'my_sources.py'}:Tones",
        "data.name=tones",
        "encoder=tiny_wavlm",
        f"paths.log_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *FAST,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = (tmp_path / "out").rglob("metrics.json")
    metrics = RunRecord.read(metrics)
    assert (metrics.status, metrics.data, metrics.modality) == ("complete", "tones", "tones")


# ---- the protocol ----


def rows_of(groups: list[str], labels: list[str]) -> list[Row]:
    return [
        Row(id=f"r{i}", label=lab, ref=None, group=g)
        for i, (g, lab) in enumerate(zip(groups, labels, strict=True))
    ]


def protocol(**kw) -> Protocol:
    return Protocol.from_cfg(OmegaConf.create(kw))


def test_group_k_fold_keeps_every_group_in_one_fold_balanced_and_deterministic():
    rng = np.random.default_rng(1)
    groups = [f"spk{int(g)}" for g in rng.integers(0, 23, size=400)]
    labels = [("a", "b")[int(x)] for x in rng.integers(0, 2, size=400)]
    first = assign(rows_of(groups, labels), protocol(group_column="speaker", num_folds=5), "t")
    again = assign(rows_of(groups, labels), protocol(group_column="speaker", num_folds=5), "t")
    folds_of = {}
    for row, original in zip(first.splits["all"], groups, strict=True):
        folds_of.setdefault(original, set()).add(row.group)
    assert all(len(f) == 1 for f in folds_of.values())  # no group in two folds
    sizes = Counter(row.group for row in first.splits["all"])
    assert sorted(sizes) == [f"fold{k}" for k in range(1, 6)]
    assert max(sizes.values()) - min(sizes.values()) <= max(Counter(groups).values())  # balanced by items
    assert [r.group for r in first.splits["all"]] == [r.group for r in again.splits["all"]]
    assert fold_of_groups({"x": 5, "y": 3, "z": 3, "w": 1}, 2) == {"x": 0, "y": 1, "z": 1, "w": 0}


def test_labels_are_stripped_merged_and_selected_with_drops_counted():
    rows = rows_of([None] * 7, [" neu", "neu\t", "hap ", "exc", "sad", "fru", ""])
    out = assign(rows, protocol(classes=["neu", "hap"], label_map={"exc": "hap"}, test_fraction=0.5), "t")
    assert out.class_names == ["neu", "hap"]
    kept = sorted(r.label for split in out.splits.values() for r in split)
    assert kept == ["hap", "hap", "neu", "neu"]
    assert sorted(reason for _, reason in out.skipped) == [
        "label 'fru' is not in data.classes",
        "label 'sad' is not in data.classes",
        "no label",
    ]


def test_mixed_number_and_string_labels_are_read_as_strings(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text(
        "".join(
            json.dumps({"text": f"t {i}", "label": [1, "1", "two", 2.5][i % 4]}) + "\n" for i in range(16)
        )
    )
    source = build_source(
        OmegaConf.create({"name": "t", "source": "text_table", "path": str(table), "test_fraction": 0.25})
    )
    assert source.class_names == ["1", "2.5", "two"]  # 1 and "1" are the same class


def test_auto_heads_divide_the_layers_with_at_least_three_each():
    assert [auto_heads(n) for n in (24, 16, 6, 40, 4, 12)] == [8, 4, 2, 8, 1, 4]


# ---- bad input: one line, exit 2, nothing written ----


def bad(tmp_path: Path, builder) -> list[str]:
    root = tmp_path / "data"
    root.mkdir()
    return builder(root)


BAD = {
    "missing root": (lambda r: ["data=audio_folder", f"data.root={r / 'nope'}"], "is not a folder"),
    "empty root": (lambda r: ["data=audio_folder", f"data.root={r}"], "is empty"),
    "missing columns": (
        lambda r: (
            (r / "t.csv").write_text("body,tag\nx,a\ny,b\n")
            and ["data=text_table", f"data.path={r / 't.csv'}"]
        ),
        "columns found: body, tag",
    ),
    "fewer groups than folds": (
        lambda r: (
            (r / "t.csv").write_text(
                "text,label,g\n" + "".join(f"x{i},{'ab'[i % 2]},{i % 3}\n" for i in range(12))
            )
            and [
                "data=text_table",
                f"data.path={r / 't.csv'}",
                "data.group_column=g",
                "data.num_folds=5",
                "data.fold=1",
            ]
        ),
        "3 distinct 'g' groups, fewer than data.num_folds=5",
    ),
    "too few for a stratified split": (
        lambda r: (
            (r / "t.csv").write_text("text,label\n" + "".join(f"x{i},a\n" for i in range(5)) + "y,b\n")
            and ["data=text_table", f"data.path={r / 't.csv'}"]
        ),
        "class 'b' has 1 item",
    ),
    "one class": (
        lambda r: (
            (r / "t.csv").write_text("text,label\nx,a\ny,a\n")
            and ["data=text_table", f"data.path={r / 't.csv'}"]
        ),
        "only the class 'a'",
    ),
    "duplicate file_name": (
        lambda r: (
            (r / "a.wav").write_bytes(b"x")
            and (r / "metadata.csv").write_text("file_name,label\na.wav,x\na.wav,y\n")
            and ["data=audio_folder", f"data.root={r}"]
        ),
        "more than once",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_cached(compose, tmp_path, capsys, case):
    make, message = BAD[case]
    overrides = bad(tmp_path, make)
    cfg = compose(
        [
            "modality=none",
            *overrides,
            "encoder=tiny_wavlm",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "logger=none",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith("daamlab: error: ") and message in err[-1], err[-1]
    assert not (tmp_path / "cache").exists()


# ---- no preset leaks ----


def test_choosing_data_drops_the_demo_preset_and_the_default_stays_the_demo(compose):
    default = compose(["modality=none"])
    assert (default.modality_name, default.encoder.name, default.loss.name) == (
        "speech_demo",
        "whisper_base",
        "focal",
    )
    own = compose(["modality=none", "data=audio_folder", "data.root=/data/birds"])
    assert (own.modality_name, own.data.name, own.encoder.name, own.loss.name) == (
        "birds",
        "birds",
        "whisper_base",
        "ce",
    )
    assert (
        own.attention.num_heads == "auto"
        and own.get("dat_channels") is None
        and own.get("torch_threads") is None
    )
    assert own.trainer.max_epochs == 35
    hf = compose(
        ["modality=none", "data=image_folder", "encoder=hf", "encoder.model=google/vit-base-patch16-224"]
    )
    assert (hf.encoder.name, hf.encoder.type, hf.encoder.resize) == (
        "vit-base-patch16-224",
        "hf",
        "center_crop",
    )


def test_efficientnet_takes_mixed_sizes_and_centre_crops(compose):
    from daamlab.encoders import build_encoder

    cfg = compose(["modality=none", "data=image_folder", "encoder.image_size=32", "encoder.device=cpu"])
    encoder = build_encoder(cfg.encoder)
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, 20:40] = 255  # a white centre third: the crop keeps it, squashing keeps all three thirds
    images = [Image.fromarray(stripes), Image.new("RGB", (13, 41), "red"), Image.new("L", (8, 8), 7)]
    assert encoder.encode(images).shape == (3, encoder.num_layers, encoder.dim)
    centre = encoder.pixels([Image.fromarray(stripes)])
    assert centre.shape == (1, 3, 32, 32) and centre.mean() > 0.9  # nearly all white
    encoder.resize = "squash"
    assert encoder.pixels([Image.fromarray(stripes)]).mean() < 0


def test_extract_takes_the_same_data_configs(compose):
    cfg = compose(["data=audio_folder", "data.root=/data/birds"], config_name="extract")
    assert (cfg.data.name, cfg.encoder.name) == ("birds", "whisper_base")
    assert (
        compose(["data=text_table", "encoder=tiny_llama"], config_name="extract").encoder.name == "tiny_llama"
    )


def test_split_folders_with_a_validation_split_and_hidden_files(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (10 + i, 20), "white").save(tmp_path / split / label / f"{i}.png")
    (tmp_path / "train" / "a" / "._0.png").write_bytes(b"AppleDouble")
    (tmp_path / "test" / "notes.txt").write_text("not in a class folder")
    cfg = OmegaConf.create({"name": "x", "source": "image_folder", "root": str(tmp_path)})
    source = build_source(cfg)
    assert source.splits() == ["train", "validation", "test"]  # val -> validation
    counts = {split: len(list(source.items(split))) for split in source.splits()}
    assert counts == {"train": 8, "validation": 4, "test": 4}
    assert sorted(reason for _, reason in source.skipped) == ["hidden file", "not inside a class folder"]


def test_hf_dataset_image_and_audio_columns_are_detected_and_decoded(tmp_path):
    import datasets

    images = [Image.new("L" if i % 2 else "RGB", (8 + 3 * i, 12), "gray") for i in range(8)]
    ds = datasets.Dataset.from_dict(
        {"picture": images, "kind": ["x", "y"] * 4},
        features=datasets.Features({"picture": datasets.Image(), "kind": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "pics"))
    cfg = {"name": "p", "source": "hf_dataset", "input_column": "picture", "label_column": "kind"}
    source = build_source(OmegaConf.create({**cfg, "dataset": str(tmp_path / "pics"), "test_fraction": 0.25}))
    assert source.kind == "image"
    items = list(source.items("train"))
    assert len(items) == 6 and all(item.input.mode == "RGB" for item in items)

    paths = []
    for i, rate in enumerate((8000, 16000, 44100, 22050)):
        paths.append(str(tmp_path / f"{i}.flac"))
        sf.write(paths[-1], tone(1.2, rate, 440, channels=1 + i % 2), rate)
    audio = datasets.Dataset.from_dict({"clip": paths, "label": ["lo", "hi", "lo", "hi"]}).cast_column(
        "clip", datasets.Audio()
    )
    audio.save_to_disk(str(tmp_path / "sounds"))
    sounds = {"dataset": str(tmp_path / "sounds"), "input_column": "clip", "label_column": "label"}
    source = build_source(OmegaConf.create({**cfg, **sounds, "test_fraction": 0.5, "chunk_seconds": 0.5}))
    assert source.kind == "audio"
    chunks = [item.input for split in source.splits() for item in source.items(split)]
    assert len(chunks) == 4 * 3 and {len(c) for c in chunks} == {
        8000,
        3200,
    }  # 1.2 s: 0.5 + 0.5 + 0.2 at 16 kHz
