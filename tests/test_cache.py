"""The feature cache: layout and contents, fingerprint, sharded merge, and refusal of damaged or foreign caches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from daamlab.encoders import build_encoder
from daamlab.errors import DaamlabError
from daamlab.features import cached_feature_set
from daamlab.features.extract import build_cache, encode_part, locate, prefetched
from daamlab.features.store import read_cache
from daamlab.sources import build_source
from tests.conftest import ROOT

SMALL = [
    "data.num_train=20",
    "data.num_test=6",
    "data.num_broken=1",
    "cache.part_size=8",
    "encoder.device=cpu",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread_module():
    """One thread for the whole module: the module-scoped cache and the per-test rebuilds must use the
    same thread count, or their float sums (and bytes) differ."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def extract_cfg(cache_dir: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("extract", overrides=[*SMALL, f"paths.cache_dir={cache_dir}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def load(cfg, verify: str = "full"):
    directory, key, fp = locate(cfg, build_source(cfg.data))
    return read_cache(directory, key, fp, verify=verify, name=cfg.data.name)


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cfg = extract_cfg(tmp_path_factory.mktemp("cache"))
    return cfg, build_cache(cfg)


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the built cache (same config, another cache_dir) for tests that damage it."""
    cfg, directory = built
    shutil.copytree(directory, tmp_path / directory.name)
    return extract_cfg(tmp_path), tmp_path / directory.name


def test_cache_layout_contents_and_skips(built):
    cfg, directory = built
    assert set(files(directory)) == {
        "manifest.json",
        *(f"{s}/{f}" for s in ("train", "test") for f in ("features.npy", "labels.npy", "meta.jsonl")),
    }  # parts and temp files are gone
    data = load(cfg)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["skipped"]["count"] == 2 and data.info["skipped"] == 2
    assert data.info["fingerprint"] == directory.name == manifest["fingerprint"]
    source = build_source(cfg.data)
    encoder = build_encoder(cfg.encoder)
    for split, n in (("train", 19), ("test", 5)):
        rows = data.splits[split]
        assert isinstance(rows.features, np.memmap) and rows.features.dtype == np.float16
        assert rows.features.shape == (n, 4, 32) and rows.labels.dtype == np.int64
        items = list(source.items(split))
        skipped = {item for item, _ in source.skipped}
        assert [i.id for i in items] == rows.ids.tolist() and not skipped & set(rows.ids.tolist())
        assert [i.group for i in items] == rows.groups.tolist()
        assert [data.class_names[k] for k in rows.labels] == [i.label for i in items]
        # length-bucketed batches, back in source order: each row is its item encoded alone
        alone = torch.cat([encoder.encode([i.input]) for i in items]).numpy().astype(np.float16)
        np.testing.assert_allclose(
            rows.features.astype(np.float32), alone.astype(np.float32), atol=2e-3, rtol=2e-3
        )
        meta = [json.loads(line) for line in (directory / split / "meta.jsonl").read_text().splitlines()]
        assert meta[0] == {
            "id": items[0].id,
            "group": items[0].group,
            "source": "synthetic",
            "chunk": 0,
            "label": items[0].label,
        }
        for name in ("features.npy", "labels.npy"):
            np.load(directory / split / name, allow_pickle=False)  # plain numeric arrays: no pickle anywhere


@pytest.mark.parametrize("kind,encoder", [("image", "tiny_beit"), ("text", "tiny_llama")])
def test_image_and_text_items_extract_and_load(tmp_path, kind, encoder):
    cfg = extract_cfg(tmp_path, f"data.kind={kind}", f"encoder={encoder}", "data.num_broken=0")
    directory = build_cache(cfg)
    data = load(cfg)
    assert {s: v.features.shape for s, v in data.splits.items()} == {"train": (20, 4, 32), "test": (6, 4, 32)}
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["encoder"]["preprocessing"]["kind"] == kind and manifest["source"]["kind"] == kind


def test_fingerprint_ignores_only_what_cannot_change_the_features(built, tmp_path):
    cfg, directory = built

    def name(*overrides):
        c = extract_cfg(tmp_path, *overrides)
        return locate(c, build_source(c.data))[0].name

    assert (
        name("encoder.batch_size=2", "data.batch_size=3", "encoder.device=auto", "cache.part_size=5")
        == directory.name
    )
    others = [
        name("encoder.dtype=bf16"),
        name("encoder.layers=[0]"),
        name("data.seed=1"),
        name("encoder.seed=1"),
    ]
    assert len(set(others)) == 4 and directory.name not in others


def test_sharded_jobs_merge_into_the_same_bytes(built, tmp_path):
    _, reference = built
    cfg = extract_cfg(tmp_path)
    directory = build_cache(cfg, shard=0, num_shards=2)
    assert not (directory / "manifest.json").exists()
    # parts g = 0, 1, 2 (train: 8 + 8 + 3 items) and 3 (test: 5 items); job 0 of 2 takes g = 0 and 2
    done = sorted(str(p.relative_to(directory)) for p in directory.rglob("parts/*.json"))
    assert done == ["train/parts/00000.json", "train/parts/00002.json"]
    build_cache(cfg, shard=1, num_shards=2)  # the job that ends last merges
    assert files(directory) == files(reference)


def test_resuming_with_another_part_size_is_refused(tmp_path):
    build_cache(extract_cfg(tmp_path), shard=0, num_shards=2)
    with pytest.raises(
        DaamlabError, match=r"holds parts of 8 items but cache.part_size=4; resume with cache.part_size=8"
    ):
        build_cache(extract_cfg(tmp_path, "cache.part_size=4"))


def test_corrupted_file_is_refused_naming_it_and_never_rebuilt(copy):
    cfg, directory = copy
    path = directory / "train" / "features.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DaamlabError, match=f"feature cache file {path} is corrupted: its xxh3 checksum is"):
        load(cfg)
    build_cache(cfg)  # what train.py's prepare step runs: the finished cache is left alone
    assert path.read_bytes() == bytes(raw)
    with pytest.raises(DaamlabError, match="is corrupted"):
        load(cfg)


@pytest.mark.parametrize("verify", ["full", "quick"])
def test_truncated_file_is_refused(copy, verify):
    cfg, directory = copy
    path = directory / "test" / "labels.npy"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-8])
    message = f"feature cache file {path} is truncated: {size - 8} bytes, the manifest says {size}"
    with pytest.raises(DaamlabError, match=message):
        load(cfg, verify)


def test_quick_verification_samples_blocks(copy):
    cfg, directory = copy
    path = directory / "test" / "meta.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"group1"', b'"group9"', 1))
    with pytest.raises(DaamlabError, match=f"{path} is corrupted"):
        load(cfg, "quick")


def test_manifest_of_another_encoder_is_refused(copy, tmp_path):
    cfg, directory = copy
    other = build_cache(extract_cfg(tmp_path / "other", "encoder.seed=1"))
    shutil.copy(other / "manifest.json", directory / "manifest.json")
    message = f"{directory / 'manifest.json'} belongs to another cache \\({other.name}\\): encoder.seed is 1 there, 0 here"
    with pytest.raises(DaamlabError, match=message):
        load(cfg)


def test_encoder_and_source_must_agree_on_kind(tmp_path):
    with pytest.raises(
        DaamlabError, match="encoder 'tiny_wavlm' takes audio input but data 'synthetic' yields image"
    ):
        build_cache(extract_cfg(tmp_path, "data.kind=image"))


def test_features_beyond_float16_are_refused():
    class Loud:  # an encoder whose activations overflow float16, as a fp16 LLM's outliers can
        num_layers, dim = 2, 3

        def encode(self, inputs):
            return torch.full((len(inputs), 2, 3), 1e6)

    with pytest.raises(
        DaamlabError, match=r"non-finite features \(NaN, or beyond float16's range of 65504\) for 2 items"
    ):
        encode_part(Loud(), ["a", "bb"], batch_size=2)


def test_only_rank_zero_prepares(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    cfg = extract_cfg(tmp_path)
    load_fn, prepare = cached_feature_set(cfg)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    prepare()
    assert not any(tmp_path.iterdir())
    with pytest.raises(
        DaamlabError, match="no finished feature cache at .*; build it with python extract.py"
    ):
        load_fn()


def test_prefetch_keeps_order_and_raises_the_sources_error():
    def items():
        yield from range(5)
        raise DaamlabError("item 5 is unreadable")

    got = []
    with pytest.raises(DaamlabError, match="item 5 is unreadable"):
        for x in prefetched(items()):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
