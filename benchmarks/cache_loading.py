"""Cache loading items/s: the memory-mapped feature cache vs one `torch.load` per item file.

The published code stored each item's features as its own file and loaded one per `__getitem__`
(IEMOCAP: a .pt per chunk; AG News: pickles). Here both sides hold the same pooled (N, d) features:
  per-item files   one fp32 .pt per item, torch.load in __getitem__, default collate (as published)
  daamlab cache    the real cache (features/store.py: fp16 features.npy, memory-mapped), read by
                   FeatureDataModule: one sorted fancy index per batch (`__getitems__`), shipped as
                   stored (fp16); on a GPU the model widens them after the copy
  + widen on CPU   the same plus `x.float()` here: the whole cost when the CPU is the device
Both are iterated as shuffled training epochs with batch 32 and no workers, after one warm-up epoch
(so both read from the page cache: the steady state of a sweep's many epochs).

    python benchmarks/cache_loading.py [--items 2000] [--layers 24] [--dim 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import interleaved, machine, print_table
from torch.utils.data import DataLoader, Dataset

from daamlab.data import FeatureDataModule
from daamlab.features import store

FP, PART = "bench-cache", 512
KEY = {"format": "bench", "encoder": {"name": "random"}, "data": {"name": "bench"}, "source_version": "0"}


def write_cache(root: Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """A real cache directory through the store's own writer (parts -> merge), as extraction leaves it."""
    cache, records = root / FP, {}
    for split, feats in features.items():
        records[split] = []
        for k, start in enumerate(range(0, len(feats), PART)):
            stop = min(start + PART, len(feats))
            rows = [
                {"id": f"{split}{i}", "group": f"g{i % 5}", "chunk": 0, "label": str(labels[split][i])}
                for i in range(start, stop)
            ]
            part = store.Part(split, k, rows, [], last=stop == len(feats))
            info = {"fingerprint": FP, "part_size": PART, "index": k, "encoder": {"name": "random"}}
            store.write_part(cache, part, feats[start:stop], info)
            records[split].append(store.read_part_meta(cache, split, k, FP, PART))
    manifest = {
        "format": KEY["format"],
        "fingerprint": FP,
        "key": KEY,
        "source": {"name": "bench", "version": "0", "kind": None},
        "class_names": ["0", "1", "2", "3"],
    }
    store.merge(cache, records, manifest)
    return cache


class PerItemFiles(Dataset):
    """The published layout: one file per item, opened and unpickled per __getitem__."""

    def __init__(self, paths: list[Path], labels: np.ndarray) -> None:
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.load(self.paths[i]), int(self.labels[i])


def epoch(loader: DataLoader, widen: bool = False):
    def run() -> None:
        for x, _ in loader:
            if widen:
                x = x.float()
            assert x.dtype in (torch.float32, torch.float16)

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    n, N, d = args.items, args.layers, args.dim
    feats = {
        s: rng.standard_normal((m, N, d), dtype=np.float32).astype(np.float16)
        for s, m in (("train", n), ("test", 64))
    }
    labels = {s: rng.integers(0, 4, len(f)) for s, f in feats.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = write_cache(root, feats, labels)
        dm = FeatureDataModule(
            lambda: store.read_cache(cache, KEY, FP, verify="quick", name="bench"), batch_size=args.batch
        )
        dm.setup("fit")
        paths = []
        for i, row in enumerate(feats["train"]):
            paths.append(root / "items" / f"{i:06d}.pt")
            paths[-1].parent.mkdir(exist_ok=True)
            torch.save(torch.from_numpy(row.astype(np.float32)), paths[-1])
        per_item = DataLoader(PerItemFiles(paths, labels["train"]), batch_size=args.batch, shuffle=True)
        times = interleaved(
            {
                "per-item torch.load": epoch(per_item),
                "daamlab memmap cache": epoch(dm.train_dataloader()),
                "daamlab cache + widen on CPU": epoch(dm.train_dataloader(), widen=True),
            },
            rounds=args.rounds,
        )
    base = times["per-item torch.load"]
    rows = [(name, f"{n / t:,.0f}", f"{base / t:.1f}x") for name, t in times.items()]
    print_table(
        f"Loading a shuffled epoch of {n} items of ({N}, {d}), batch {args.batch}, median of {args.rounds}",
        rows,
        ("loader", "items/s", "vs per-item files"),
    )


if __name__ == "__main__":
    main()
