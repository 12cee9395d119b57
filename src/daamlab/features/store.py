"""One cache directory on disk: resumable parts while extracting; merged, checksummed split files when done.

```
<fingerprint>/<split>/parts/00000.npy   (n, N, d) float16 features of one part  } while extracting;
<fingerprint>/<split>/parts/00000.json  its rows, skips, encoder fingerprint and  } removed once merged
                                        checksums (of the .npy, and of itself)   }
<fingerprint>/<split>/features.npy      (n, N, d) float16, read with np.load(mmap_mode="r")
<fingerprint>/<split>/labels.npy        (n,) int64 indices into the manifest's class names
<fingerprint>/<split>/meta.jsonl        one JSON line per row: id, group, source, chunk, label
<fingerprint>/manifest.json             written last: its presence means the cache is complete
```
Every file is written under a temporary name and renamed. A part's .json is written after its .npy,
so a part counts as done only when both are whole: the .json matches its own checksum and the .npy
the checksum the .json holds. A damaged part (bit rot, a copy cut short, a hand edit) is extracted
again, never merged, and the merge checks each part's checksum once more as it copies it. A manifest
that is not the one merge() writes is refused, never rewritten. Nothing here depends on time, process or part
layout, so a resumed extraction ends byte-identical to an uninterrupted one. No pickles: .npy of
numeric dtypes and JSON only (np.load is called with allow_pickle=False).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
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
from daamlab.io import atomic_write, write_npy, write_text
from daamlab.io import write_json as _write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLIT_FILES = ("features.npy", "labels.npy", "meta.jsonl")
BLOCK = 1 << 24  # 16 MiB reads for checksums
SAMPLE_BLOCK, SAMPLES = 1 << 16, 16  # quick verification: 16 blocks of 64 KiB spread over the file


# ---------------------------------------------------------------------------------------------- writing


def write_json(path: Path, payload: Any) -> None:
    _write_json(path, payload, indent=1)  # the cache's own layout: one space


def _xxh3(data: bytes) -> str:
    import xxhash

    return xxhash.xxh3_128(data).hexdigest()


def _record_checksum(record: dict[str, Any]) -> str:
    """xxh3 of a part record's canonical JSON (without its own checksum): any edit to the .json shows."""
    body = {k: v for k, v in record.items() if k != "record_xxh3_128"}
    return _xxh3(json.dumps(body, sort_keys=True).encode())


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
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    data = buffer.getvalue()  # the checksum is of the bytes meant for disk, so a bad write shows too
    atomic_write(npy, lambda f: f.write(data))
    record = {
        **info,
        "rows": part.rows,
        "skipped": part.skipped,
        "last": part.last,
        "shape": list(features.shape),
        "npy": {"bytes": len(data), "xxh3_128": _xxh3(data)},
    }
    write_json(meta, {**record, "record_xxh3_128": _record_checksum(record)})


# what a part record must hold, by type (checked once its own checksum matches: a hand-made one)
PART_FIELDS: dict[str, type | tuple[type, ...]] = {
    "fingerprint": str,
    "part_size": int,
    "index": int,
    "encoder": dict,
    "rows": list,
    "skipped": list,
    "last": bool,
    "shape": list,
    "npy": dict,
}


def part_state(
    cache: Path, split: str, index: int, fingerprint: str, part_size: int
) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None): the part is done, whole and made for this cache; (None, None): not done yet;
    (None, why): damaged, to be extracted again. A whole part of another cache or part size is refused."""
    npy, meta = part_paths(cache, split, index)
    if not meta.is_file():
        return None, None  # a .npy alone is a part killed before its .json: simply not done
    try:
        record = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"its .json does not read ({type(e).__name__})"
    if not isinstance(record, dict):
        return None, f"its .json holds a JSON {type(record).__name__}, not a part record"
    if "record_xxh3_128" not in record:
        return None, "its .json has no checksum"
    if record.pop("record_xxh3_128") != _record_checksum(record):
        return None, "its .json does not match its checksum"
    for key, kind in PART_FIELDS.items():
        if not isinstance(record.get(key), kind):
            return None, f"its .json has no valid '{key}'"
    if record["index"] != index or len(record["shape"]) != 3 or record["shape"][0] != len(record["rows"]):
        return None, f"its .json describes part {record['index']} of shape {record['shape']}"
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
    written = record["npy"]
    if not npy.is_file():
        return None, "its .npy is missing"
    size = npy.stat().st_size
    if size != written.get("bytes"):
        return None, f"its .npy is {size} bytes, {written.get('bytes')} were written"
    if full_checksum(npy) != written.get("xxh3_128"):
        return None, "its .npy does not match its checksum"
    return record, None


def read_part_meta(
    cache: Path,
    split: str,
    index: int,
    fingerprint: str,
    part_size: int,
    damaged: list[str] | None = None,
) -> dict[str, Any] | None:
    """The part's record if it is done, whole and made for this cache, else None. A damaged part is
    logged (it is extracted again, never merged) and appended to `damaged`, for the caller's count."""
    record, damage = part_state(cache, split, index, fingerprint, part_size)
    if damage:
        stem = str(part_paths(cache, split, index)[0].with_suffix(""))
        log.warning("feature cache part %s is damaged (%s): not merged, extracted again", stem, damage)
        if damaged is not None:
            damaged.append(stem)
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
        atomic_write(split_dir / "features.npy", concatenate)
        rows = [row for r in records for row in r["rows"]]
        write_npy(
            split_dir / "labels.npy", np.array([class_index[row["label"]] for row in rows], dtype=np.int64)
        )
        lines = "".join(
            json.dumps({**row, "source": manifest["source"]["name"]}, sort_keys=True) + "\n" for row in rows
        )
        write_text(split_dir / "meta.jsonl", lines)
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


def _write_concatenated(
    f, cache: Path, split: str, records: list[dict[str, Any]], shape: tuple[int, ...]
) -> None:
    """An .npy header for `shape` float16, then each part's rows in order: the file np.save would write."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": shape}
    )
    for r in records:
        path = part_paths(cache, split, r["index"])[0]
        if full_checksum(path) != r["npy"]["xxh3_128"]:  # changed since it was read: never merged
            raise DaamlabError(
                f"{path} changed after it was checked (it no longer matches its checksum); "
                "run the extraction again: it extracts that part again"
            )
        part = np.load(path, mmap_mode="r", allow_pickle=False)
        if part.shape != tuple(r["shape"]) or part.dtype != np.float16:
            raise DaamlabError(
                f"{part_paths(cache, split, r['index'])[0]} holds {part.shape} {part.dtype}, "
                f"expected {r['shape']} float16"
            )
        f.write(np.ascontiguousarray(part).tobytes())


# ---------------------------------------------------------------------------------------------- reading


def check_cache_dir(cache: Path) -> None:
    """The cache directory, or the first of its parents that exists, must be a directory: a path through
    a file (DAAMLAB_CACHE set to a file, say) is one line, not ENOTDIR from deep inside a write."""
    existing = cache
    while not os.path.exists(existing) and existing != existing.parent:  # os.path: False on any OSError
        existing = existing.parent
    if not os.path.isdir(existing):
        raise DaamlabError(
            f"the feature cache {cache} cannot be made: {existing} is a file, not a directory; "
            "point paths.cache_dir (or DAAMLAB_CACHE) at a directory"
        )


def ensure_writable(root: Path) -> None:
    """Create `root` and a file in it, before any extraction: a read-only or foreign directory is one line."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise DaamlabError(
            f"cannot write the feature cache under {root} ({e.strerror or e}); "
            "point paths.cache_dir (or DAAMLAB_CACHE) at a writable directory"
        ) from None


def is_finished(cache: Path) -> bool:
    """A manifest is there (whatever it is: read_manifest judges it; a finished cache is never rebuilt)."""
    return os.path.lexists(cache / MANIFEST)


SPLIT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a directory name inside the cache, never ../
# what merge() writes into a manifest, by type: anything else is refused before it is used
MANIFEST_FIELDS: dict[str, type] = {
    "format": int,
    "fingerprint": str,
    "key": dict,
    "source": dict,
    "class_names": list,
    "encoder": dict,
    "num_layers": int,
    "dim": int,
    "dtype": str,
    "splits": dict,
    "skipped": dict,
}
FILE_FIELDS: dict[str, type] = {"bytes": int, "xxh3_128": str, "sample_xxh3_128": str}


KINDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number", bool: "true/false"}


def _kind(kind: type) -> str:
    return KINDS.get(kind, "null" if kind is type(None) else f"a {kind.__name__}")


def _fields_problem(node: Any, fields: dict[str, type], where: str = "") -> str | None:
    """What is missing or mistyped in `node` (at dotted path `where`; "" for the manifest itself)."""
    label = f"'{where}'" if where else "it"
    if not isinstance(node, dict):
        return f"{label} is {_kind(type(node))}, not an object"
    for key, kind in fields.items():
        if key not in node:
            return f"{label} has no '{key}'"
        value = node[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"'{where + '.' if where else ''}{key}' is {_kind(type(value))}, not {_kind(kind)}"
    return None


def manifest_problem(manifest: Any) -> str | None:
    """What makes `manifest` other than what merge() writes, or None."""
    problem = _fields_problem(manifest, MANIFEST_FIELDS)
    if problem:
        return problem
    if not manifest["splits"]:
        return "it lists no splits"
    if not all(isinstance(c, str) for c in manifest["class_names"]) or not manifest["class_names"]:
        return "'class_names' is not a list of names"
    problem = _fields_problem(manifest["source"], {"name": str}, "source") or _fields_problem(
        manifest["skipped"], {"count": int}, "skipped"
    )
    if problem or "version" not in manifest["source"]:
        return problem or "'source' has no 'version'"
    for split, entry in manifest["splits"].items():
        if not SPLIT_NAME.fullmatch(split):
            return f"split {split!r} is not a directory name"
        problem = _fields_problem(entry, {"size": int, "files": dict}, f"splits.{split}")
        if problem:
            return problem
        for name in SPLIT_FILES:
            if name not in entry["files"]:
                return f"'splits.{split}.files' has no record of {name}"
            problem = _fields_problem(entry["files"][name], FILE_FIELDS, f"splits.{split}.files.{name}")
            if problem:
                return problem
    return None


def read_manifest(cache: Path) -> dict[str, Any]:
    """The manifest, or one line naming the file and what is wrong with it (nothing is changed)."""
    path = cache / MANIFEST
    fix = f"delete {cache} and extract again (nothing was changed)"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DaamlabError(f"{path} is corrupt ({e}); {fix}") from None
    except OSError as e:
        raise DaamlabError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    problem = manifest_problem(manifest)
    if problem:
        raise DaamlabError(f"{path} is not a feature cache manifest: {problem}; {fix}")
    return manifest


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
    if not is_finished(cache):
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
