"""cache.enabled=false: the frozen encoder inside the LightningModule. Cached and uncached training
agree, checkpoints hold the head only, eval.py restores the model, augmentation is per epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

import daamlab.data as data
import daamlab.encoders as encoders
from daamlab.build import build
from daamlab.data import build_datamodule
from daamlab.data.augment import build_augment
from daamlab.encoders.hf import weights_checksum
from daamlab.errors import DaamlabError
from daamlab.features import extract as extract_module
from daamlab.features.extract import build_cache
from daamlab.record import RunRecord
from daamlab.training import evaluate, train

# tiny BEiT on synthetic images; a high lr so the validation accuracy moves between epochs
DATA = [
    "modality=toy",  # the fixed small protocol, whatever the default modality is
    "data=synthetic",
    "data.kind=image",
    "encoder=tiny_beit",
    "encoder.device=cpu",
    "data.num_train=32",
    "data.num_test=16",
    "data.num_classes=5",
]
SMALL = [
    *DATA,
    "attention=daam_v2",
    "decoder=linear",
    "optim.lr=2e-2",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared 2-core machine


def run(compose, root: Path, name: str, *overrides: str) -> tuple[Path, RunRecord]:
    cfg = compose([*SMALL, f"paths.cache_dir={root / 'cache'}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / name)
    return root / name, train(cfg)


def val_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(val/acc, val/loss) per epoch, from the CSV logger."""
    rows = csv.DictReader(open(run_dir / "csv" / "metrics.csv"))
    return [(float(r["val/acc"]), float(r["val/loss"])) for r in rows if r.get("val/acc")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import ROOT

    def _compose(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
            return compose(config_name="train", overrides=list(overrides))

    root = tmp_path_factory.mktemp("no_cache")
    torch.set_num_threads(1)
    out = {
        "cached": run(_compose, root, "cached"),
        # the cache stores float16: rounding the uncached features the same way makes the two exact
        "uncached": run(_compose, root, "uncached", "cache.enabled=false", "cache.round_fp16=true"),
        "uncached_fp32": run(_compose, root, "uncached_fp32", "cache.enabled=false"),
    }
    GlobalHydra.instance().clear()
    return out


def test_cached_and_uncached_training_agree(runs):
    cached, uncached = val_curve(runs["cached"][0]), val_curve(runs["uncached"][0])
    assert len(cached) == 4 and len({acc for acc, _ in cached}) > 1  # a curve that moves
    np.testing.assert_allclose(uncached, cached, rtol=1e-6, atol=1e-7)
    # without the rounding the features differ by float16's resolution: close, not equal
    fp32 = val_curve(runs["uncached_fp32"][0])
    np.testing.assert_allclose(fp32, cached, atol=5e-3)
    assert [loss for _, loss in fp32] != [loss for _, loss in cached]
    a, b = runs["cached"][1], runs["uncached"][1]
    assert b.best_val_acc == a.best_val_acc and b.test == pytest.approx(a.test, rel=1e-6)
    assert b.params == a.params  # the same head; the frozen encoder counts in neither
    np.testing.assert_allclose(
        np.load(runs["uncached"][0] / "gates.npy"), np.load(runs["cached"][0] / "gates.npy")
    )
    assert b.data_info["cache"] is None and b.data_info["encoder"]["arch"] == "beit"
    assert b.splits == a.splits


def test_checkpoint_holds_the_head_only(runs):
    def state(name):
        (ckpt,) = (runs[name][0] / "checkpoints").glob("epoch_*.ckpt")
        return torch.load(ckpt, weights_only=True)["state_dict"]

    cached, uncached = state("cached"), state("uncached")
    # exactly the cached path's head: same keys and shapes, no encoder weight
    assert {k: v.shape for k, v in uncached.items()} == {k: v.shape for k, v in cached.items()}
    assert not any("encoder" in k or "embeddings" in k for k in uncached)


def test_eval_restores_the_model_from_a_checkpoint(runs, compose, tmp_path, monkeypatch):
    run_dir, metrics = runs["uncached"]
    built = []
    original = encoders.build_encoder
    monkeypatch.setattr(data, "build_encoder", lambda c: built.append(c.name) or original(c))
    (ckpt,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    cfg = compose([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false"], config_name="eval")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    result = evaluate(cfg)
    assert built == ["tiny_beit"]  # rebuilt from its source, not read from the checkpoint
    assert result.test == pytest.approx(metrics.test, rel=1e-6)
    assert json.loads((tmp_path / "eval_metrics.json").read_text())["test"] == result.test


def test_encoder_stays_frozen_in_eval_mode_and_out_of_the_optimizer(compose, tmp_path):
    cfg = compose([*SMALL, f"paths.cache_dir={tmp_path}", "cache.enabled=false"])
    dm, model = build(cfg)
    encoder = model.encoder.model
    before = weights_checksum(encoder)
    optimizer = model.configure_optimizers()["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}  # the head's, all of them
    assert not optimized & {id(p) for p in encoder.parameters()}
    model.train()
    assert model.training and not encoder.training  # Lightning's train() never reaches the encoder
    x, y = next(iter(dm.train_dataloader()))
    assert isinstance(x, list) and isinstance(x[0], Image.Image) and y.shape == (8,)
    loss = model.criterion(model(x), y)
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in encoder.parameters())
    assert weights_checksum(encoder) == before


def test_noise_is_at_the_drawn_snr_and_seeded():
    noise = build_augment({"name": "noise", "snr_db": [20, 20]}, "audio")
    wave = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    noisy = noise(wave, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(wave**2) / np.mean((noisy - wave) ** 2))
    assert noisy.dtype == np.float32 and snr == pytest.approx(20, abs=0.3)
    np.testing.assert_array_equal(noise(wave, np.random.default_rng(0)), noisy)
    assert not np.array_equal(noise(wave, np.random.default_rng(1)), noisy)


def test_crop_flip_keeps_the_drawn_share_of_the_area():
    augment = build_augment({"name": "crop_flip", "scale": [0.25, 0.25], "flip_p": 1.0}, "image")
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    out = augment(Image.fromarray(pixels), np.random.default_rng(0))
    assert out.size == (20, 20)  # a quarter of the area, the same aspect ratio
    crop = np.asarray(out)[:, ::-1]  # flip_p=1: mirrored; undo it and find the crop in the image
    where = [
        (t, c) for t in range(21) for c in range(21) if np.array_equal(pixels[t : t + 20, c : c + 20], crop)
    ]
    assert len(where) == 1


def test_training_items_are_augmented_per_epoch_and_evaluation_items_never(compose, tmp_path):
    cfg = compose([*SMALL, f"paths.cache_dir={tmp_path}", "cache.enabled=false", "augment=crop_flip"])
    dm = build_datamodule(cfg, cached=False)
    dm.setup("fit")
    train, n = dm.train_set, len(dm.train_set)

    def images(indices):
        return [np.asarray(im).tobytes() for im in train.__getitems__(indices)[0]]

    epoch0, epoch1 = images(list(range(n))), images([n + i for i in range(n)])  # index // n = epoch
    assert images(list(range(n))) == epoch0  # seeded by (seed, epoch, row)
    assert sum(a != b for a, b in zip(epoch0, epoch1, strict=True)) > n // 2
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(3)
    assert sorted(sampler) == list(range(3 * n, 4 * n))  # the loader tags each index with its epoch
    val = dm.val_set
    val_x, _ = val.__getitems__(list(range(len(val))))
    assert all(a is b for a, b in zip(val_x, [val.split.inputs[r] for r in sorted(val.rows)], strict=True))


def test_augment_needs_the_uncached_mode_and_a_matching_modality(compose, tmp_path):
    cfg = compose([*SMALL, f"paths.cache_dir={tmp_path}", "augment=crop_flip"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(DaamlabError, match="cache.enabled=false"):
        train(cfg)
    with pytest.raises(DaamlabError, match="augment=noise takes audio input but the data yields image"):
        build_datamodule(compose([*SMALL, "cache.enabled=false", "augment=noise"]), cached=False)
    with pytest.raises(DaamlabError, match=r"augment.snr_db=\[30, 10\] must be \[min, max\]"):
        build_augment({"name": "noise", "snr_db": [30, 10]}, "audio")


def test_a_cache_too_big_for_the_disk_points_to_the_uncached_mode(compose, tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(extract_module.shutil, "disk_usage", lambda path: Usage)
    cfg = compose([*DATA, f"paths.cache_dir={tmp_path}"], config_name="extract")
    with pytest.raises(DaamlabError, match=r"needs about .* free; .*encoder.layers=.*cache.enabled=false"):
        build_cache(cfg)


def test_torch_threads_narrows_a_cached_head_only(compose, tmp_path, monkeypatch):
    """The demos' torch_threads=1 is for the small head; an encoder in the loop keeps every core."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    one_epoch = ["++torch_threads=1", "trainer.max_epochs=1", "test=false"]
    run(compose, tmp_path, "uncached", *one_epoch, "cache.enabled=false")
    assert calls == []
    run(compose, tmp_path, "cached", *one_epoch)
    assert calls == [1]
