"""One cache directory on disk: resumable parts while extracting; merged, checksummed split files when done.

```
<fingerprint>/<split>/parts/00000.npy   (n, N, d) float16 features of one part  } while extracting;
<fingerprint>/<split>/parts/00000.json  its rows, skips and encoder fingerprint  } removed once merged
<fingerprint>/<split>/features.npy      (n, N, d) float16, read with np.load(mmap_mode="r")
<fingerprint>/<split>/labels.npy        (n,) int64 indices into the manifest's class names
<fingerprint>/<split>/meta.jsonl        one JSON line per row: id, group, source, chunk, label
<fingerprint>/manifest.json             written last: its presence means the cache is complete
```
Every file is written under a temporary name and renamed. A part's .json is written after its .npy,
so a part counts as done only when both are whole. Nothing here depends on time, process or part
layout, so a resumed extraction ends byte-identical to an uninterrupted one. No pickles: .npy of
numeric dtypes and JSON only (np.load is called with allow_pickle=False).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from daamlab.errors import DaamlabError
from daamlab.features.featureset import FeatureSet, FeatureSplit
from daamlab.features.fingerprint import key_differences

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLIT_FILES = ("features.npy", "labels.npy", "meta.jsonl")
BLOCK = 1 << 24  # 16 MiB reads for checksums
SAMPLE_BLOCK, SAMPLES = 1 << 16, 16  # quick verification: 16 blocks of 64 KiB spread over the file


# ---------------------------------------------------------------------------------------------- writing


def _atomic(path: Path, write) -> None:
    """write(file object) into a temp file beside `path`, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    _atomic(path, lambda f: f.write(json.dumps(payload, indent=1, sort_keys=True).encode() + b"\n"))


def write_npy(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def part_paths(cache: Path, split: str, index: int) -> tuple[Path, Path]:
    stem = cache / split / "parts" / f"{index:05d}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


@dataclass
class Part:
    """One resumable unit of extraction: up to `part_size` consecutive items of a split."""

    split: str
    index: int
    rows: list[dict[str, Any]]  # id, group, chunk, label (name) per row, in source order
    skipped: list[list[str]]  # [item, reason] of the items skipped since the previous part
    last: bool  # the split's final part


def write_part(cache: Path, part: Part, features: np.ndarray, info: dict[str, Any]) -> None:
    """features (n, N, d) float16; info: fingerprint, part_size and the encoder's own fingerprint."""
    npy, meta = part_paths(cache, part.split, part.index)
    write_npy(npy, features)
    write_json(
        meta,
        {
            **info,
            "rows": part.rows,
            "skipped": part.skipped,
            "last": part.last,
            "shape": list(features.shape),
        },
    )


def read_part_meta(
    cache: Path, split: str, index: int, fingerprint: str, part_size: int
) -> dict[str, Any] | None:
    """The part's record if it is done (and was made for this cache), else None."""
    npy, meta = part_paths(cache, split, index)
    if not meta.is_file():
        return None
    record = json.loads(meta.read_text())
    if record["fingerprint"] != fingerprint:
        raise DaamlabError(
            f"{meta} belongs to cache {record['fingerprint']}, not {fingerprint}; "
            f"delete {cache} to start over"
        )
    if record["part_size"] != part_size:
        raise DaamlabError(
            f"{meta.parent} holds parts of {record['part_size']} items but cache.part_size={part_size}; "
            f"resume with cache.part_size={record['part_size']}, or delete {cache} to start over"
        )
    if not npy.is_file():
        return None
    return record


# ---------------------------------------------------------------------------------------------- checksums


def file_checksums(path: Path) -> dict[str, Any]:
    """Size, xxh3-128 of the whole file, and of SAMPLES fixed blocks (the quick check)."""
    return {
        "bytes": path.stat().st_size,
        "xxh3_128": full_checksum(path),
        "sample_xxh3_128": sampled_checksum(path),
    }


def sampled_checksum(path: Path) -> str:
    import xxhash

    size = path.stat().st_size
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for offset in sorted(
            {min(size, k * size // SAMPLES) for k in range(SAMPLES)} | {max(0, size - SAMPLE_BLOCK)}
        ):
            f.seek(offset)
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def full_checksum(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- merging


def merge(cache: Path, parts: dict[str, list[dict[str, Any]]], manifest: dict[str, Any]) -> None:
    """Concatenate each split's parts into its final files, write the manifest, remove the parts.

    parts: split -> part records in order (from read_part_meta). manifest: everything but the
    per-split sizes and file checksums, which this adds."""
    encoders = {json.dumps(r["encoder"], sort_keys=True) for records in parts.values() for r in records}
    if len(encoders) != 1:
        raise DaamlabError(
            f"the parts under {cache} were extracted by different encoders (weights or preprocessing differ, "
            f"e.g. a hub revision moved between shard jobs); delete {cache} and extract again "
            "with a pinned encoder.revision"
        )
    shapes = {tuple(r["shape"][1:]) for records in parts.values() for r in records}
    if len(shapes) != 1:
        raise DaamlabError(
            f"the parts under {cache} disagree on (layers, dim): {sorted(shapes)}; "
            f"delete {cache} and extract again"
        )
    (num_layers, dim), class_index = shapes.pop(), {c: i for i, c in enumerate(manifest["class_names"])}
    splits, skipped = {}, []
    for split, records in parts.items():
        split_dir = cache / split
        for stale in split_dir.glob(".*.tmp"):  # left by a merge that was killed
            stale.unlink()
        n = sum(r["shape"][0] for r in records)
        concatenate = partial(
            _write_concatenated, cache=cache, split=split, records=records, shape=(n, num_layers, dim)
        )
        _atomic(split_dir / "features.npy", concatenate)
        rows = [row for r in records for row in r["rows"]]
        write_npy(
            split_dir / "labels.npy", np.array([class_index[row["label"]] for row in rows], dtype=np.int64)
        )
        lines = "".join(
            json.dumps({**row, "source": manifest["source"]["name"]}, sort_keys=True) + "\n" for row in rows
        )
        _atomic(split_dir / "meta.jsonl", partial(_write_text, text=lines))
        splits[split] = {"size": n, "files": {name: file_checksums(split_dir / name) for name in SPLIT_FILES}}
        skipped += [
            {"split": split, "item": item, "reason": reason} for r in records for item, reason in r["skipped"]
        ]
    write_json(
        cache / MANIFEST,
        {
            **manifest,
            "encoder": json.loads(encoders.pop()),
            "num_layers": num_layers,
            "dim": dim,
            "dtype": "float16",
            "splits": splits,
            "skipped": {"count": len(skipped), "items": skipped},
        },
    )
    for split in parts:
        shutil.rmtree(cache / split / "parts", ignore_errors=True)


def _write_text(f, *, text: str) -> None:
    f.write(text.encode())


def _write_concatenated(
    f, cache: Path, split: str, records: list[dict[str, Any]], shape: tuple[int, ...]
) -> None:
    """An .npy header for `shape` float16, then each part's rows in order: the file np.save would write."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": shape}
    )
    for r in records:
        part = np.load(part_paths(cache, split, r["index"])[0], mmap_mode="r", allow_pickle=False)
        if part.shape != tuple(r["shape"]) or part.dtype != np.float16:
            raise DaamlabError(
                f"{part_paths(cache, split, r['index'])[0]} holds {part.shape} {part.dtype}, "
                f"expected {r['shape']} float16"
            )
        f.write(np.ascontiguousarray(part).tobytes())


# ---------------------------------------------------------------------------------------------- reading


def read_manifest(cache: Path) -> dict[str, Any]:
    path = cache / MANIFEST
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DaamlabError(f"{path} is corrupt ({e}); delete {cache} and extract again") from None


def check_manifest(cache: Path, manifest: dict[str, Any], key: dict[str, Any], fingerprint: str) -> None:
    if manifest.get("fingerprint") != fingerprint or manifest.get("key") != key:
        diffs = key_differences(key, manifest.get("key") or {})
        raise DaamlabError(
            f"{cache / MANIFEST} belongs to another cache ({manifest.get('fingerprint')}): "
            f"{'; '.join(diffs) or 'its fingerprint differs'}. It is not this run's cache {fingerprint}; "
            "restore the right directory or delete this one (nothing was overwritten)"
        )


def verify_file(path: Path, record: dict[str, Any], mode: str) -> None:
    """Refuse a missing, truncated or corrupted file. full: whole-file checksum; quick: sampled blocks."""
    fix = f"delete {path.parent.parent} and extract again"
    if not path.is_file():
        raise DaamlabError(f"feature cache file {path} is missing; {fix}")
    size = path.stat().st_size
    if size != record["bytes"]:
        what = "truncated" if size < record["bytes"] else "longer than written"
        raise DaamlabError(
            f"feature cache file {path} is {what}: {size} bytes, the manifest says {record['bytes']}; {fix}"
        )
    found, expected = (
        (full_checksum(path), record["xxh3_128"])
        if mode == "full"
        else (sampled_checksum(path), record["sample_xxh3_128"])
    )
    if found != expected:
        raise DaamlabError(
            f"feature cache file {path} is corrupted: its xxh3 checksum is {found}, "
            f"the manifest says {expected}; {fix}"
        )


def read_cache(cache: Path, key: dict[str, Any], fingerprint: str, *, verify: str, name: str) -> FeatureSet:
    if verify not in ("full", "quick"):
        raise DaamlabError(f"cache.verify={verify!r} must be full or quick")
    if not (cache / MANIFEST).is_file():
        raise DaamlabError(
            f"no finished feature cache at {cache}; "
            "build it with python extract.py (same data/encoder overrides)"
        )
    manifest = read_manifest(cache)
    check_manifest(cache, manifest, key, fingerprint)
    shape_tail = (manifest["num_layers"], manifest["dim"])
    splits = {}
    for split, entry in manifest["splits"].items():
        split_dir, n = cache / split, entry["size"]
        for file in SPLIT_FILES:
            verify_file(split_dir / file, entry["files"][file], verify)
        features = np.load(split_dir / "features.npy", mmap_mode="r", allow_pickle=False)
        labels = np.load(split_dir / "labels.npy", allow_pickle=False)
        if features.shape != (n, *shape_tail) or features.dtype != np.float16:
            raise DaamlabError(
                f"{split_dir / 'features.npy'} holds {features.shape} {features.dtype}, "
                f"the manifest says {(n, *shape_tail)} float16; delete {cache} and extract again"
            )
        if labels.shape != (n,) or labels.dtype != np.int64:
            raise DaamlabError(
                f"{split_dir / 'labels.npy'} holds {labels.shape} {labels.dtype}, "
                f"the manifest says ({n},) int64"
            )
        meta = [json.loads(line) for line in (split_dir / "meta.jsonl").read_text().splitlines()]
        splits[split] = FeatureSplit(
            features, labels, np.array([m["id"] for m in meta]), np.array([m["group"] for m in meta])
        )
    skipped = manifest["skipped"]["count"]
    if skipped:
        log.warning(
            "feature cache %s: %d source items were skipped at extraction (listed in %s)",
            cache.name,
            skipped,
            cache / MANIFEST,
        )
    return FeatureSet(
        name=name,
        class_names=list(manifest["class_names"]),
        splits=splits,
        info={
            "cache_dir": str(cache),
            "fingerprint": fingerprint,
            "source_version": manifest["source"]["version"],
            "skipped": skipped,
            "encoder": manifest["encoder"],
        },
    )
