"""Extraction: source items -> frozen encoder -> resumable parts -> one merged, verified cache directory.

Items are taken in the source's order and cut into parts of `cache.part_size`. Inside a part they
are sorted by length (longest first, ties in source order) and batched, so batches hold similar
lengths and pad little; features go back to source order before the part is written. A part is
the unit of resuming (a killed run redoes at most the parts it had not finished) and of sharding
(job i of k takes parts g with g % k == i, g counting across splits). The encoder is built only
when this job has a part to extract, so a finished or fully sharded cache merges without it.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from daamlab.encoders import LayerEncoder, build_encoder
from daamlab.errors import DaamlabError
from daamlab.features import store
from daamlab.features.fingerprint import cache_key, fingerprint
from daamlab.io import exclusive
from daamlab.sources import Source, build_source
from daamlab.validate import validate

log = logging.getLogger(__name__)
T = TypeVar("T")


def locate(cfg: DictConfig, source: Source) -> tuple[Path, dict[str, Any], str]:
    """(cache directory, key, fingerprint) for this config; needs no encoder."""
    if cfg.get("encoder") is None:
        raise DaamlabError(
            f"data '{cfg.data.name}' yields raw items and needs an encoder: "
            "add encoder=... (see configs/encoder/)"
        )
    key = cache_key(cfg, source.version)
    fp = fingerprint(cfg, key)
    store.check_cache_dir(Path(cfg.paths.cache_dir) / fp)
    return Path(cfg.paths.cache_dir) / fp, key, fp


def input_length(x: Any) -> int:
    """A cheap proxy for padded length: samples (audio), characters (text), pixels (image: resized anyway)."""
    if isinstance(x, np.ndarray):
        return int(x.size)
    if isinstance(x, str):
        return len(x)
    size = getattr(x, "size", None)  # PIL images
    return int(np.prod(size)) if isinstance(size, tuple) else 0


def encode_part(
    encoder: LayerEncoder,
    inputs: list[Any],
    batch_size: int,
    ids: list[str] | None = None,
    on_batch: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """(n, N, d) float16 features in input order, batched by length; `ids` name bad items in errors.
    `on_batch(n)` after each batch: the progress bar moves per batch, not per part of 256 items."""
    lengths = [input_length(x) for x in inputs]
    order = sorted(range(len(inputs)), key=lambda i: -lengths[i])  # stable: ties keep source order
    out = np.empty((len(inputs), encoder.num_layers, encoder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = encoder.encode([inputs[i] for i in rows]).numpy()
        if on_batch is not None:
            on_batch(len(rows))
    half = out.astype(np.float16)
    bad = ~np.isfinite(half).all(axis=(1, 2))
    if bad.any():
        named = [ids[i] for i in np.flatnonzero(bad)[:5]] if ids else []
        raise DaamlabError(
            "the encoder gave non-finite features (NaN, or beyond float16's range of 65504) for "
            f"{int(bad.sum())} items of one part{' (' + ', '.join(named) + ')' if named else ''}; "
            "run it in another precision (encoder.dtype=fp32 or bf16)"
        )
    return half


def parts(source: Source, split: str, part_size: int) -> Iterator[tuple[store.Part, list[Any]]]:
    """(part, raw inputs) of consecutive items; each part carries the skips seen since the previous one,
    and the last part (always at least one, maybe empty) also those after the final item."""
    skipped = getattr(source, "skipped", None)
    seen = len(skipped) if skipped is not None else 0

    def new_skips() -> list[list[str]]:
        nonlocal seen
        if skipped is None:
            return []
        fresh = [[str(item), str(reason)] for item, reason in skipped[seen:]]
        seen = len(skipped)
        return fresh

    index, rows, inputs = 0, [], []
    for item in source.items(split):
        if item.label not in source.class_names:
            raise DaamlabError(
                f"source '{source.name}' item {item.id} has label {item.label!r}, "
                f"not one of {source.class_names}"
            )
        if len(rows) == part_size:  # a full part, and another item follows: not the last
            yield store.Part(split, index, rows, new_skips(), last=False), inputs
            index, rows, inputs = index + 1, [], []
        rows.append({"id": item.id, "group": item.group, "chunk": item.chunk, "label": item.label})
        inputs.append(item.input)
    yield store.Part(split, index, rows, new_skips(), last=True), inputs


def prefetched(iterator: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`iterator` run in a background thread, `depth` items ahead, so that reading the source (disk,
    decoding, resampling) overlaps with encoding. Order and exceptions are kept."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in iterator:
                if not put((x, None)):
                    return
            put((end, None))
        except BaseException as e:  # handed to the consumer, raised there
            put((end, e))

    thread = threading.Thread(target=work, name="daamlab-source", daemon=True)
    thread.start()
    try:
        while True:
            x, error = buffer.get()
            if x is end:
                if error is not None:
                    raise error
                return
            yield x
    finally:
        stop.set()  # a consumer that stops early releases the worker


def estimate_bytes(source: Source, encoder: LayerEncoder) -> int | None:
    counts = [source.num_items(split) for split in source.splits()]
    if any(c is None for c in counts):
        return None
    return sum(counts) * encoder.num_layers * encoder.dim * 2  # float16


def build_cache(
    cfg: DictConfig, *, shard: int = 0, num_shards: int = 1, source: Source | None = None
) -> Path:
    """Make sure this config's cache exists (extracting and merging what is missing); return its directory.

    With num_shards > 1 only this job's parts are extracted; the job that finds every part present
    merges them (the others say what is left)."""
    if not 0 <= shard < num_shards:
        raise DaamlabError(
            f"cache.shard={shard} must be in 0..{num_shards - 1} (cache.num_shards={num_shards})"
        )
    part_size = int(OmegaConf.select(cfg, "cache.part_size", default=256))
    if part_size < 1:
        raise DaamlabError(f"cache.part_size={part_size} must be >= 1")
    source = source if source is not None else build_source(cfg.data)  # a caller's, built once
    cache, key, fp = locate(cfg, source)
    if store.is_finished(cache):  # a finished cache is never rebuilt; a malformed manifest is refused
        store.read_manifest(cache)
        log.info("feature cache found: %s", cache)
        return cache
    store.ensure_writable(cache.parent)
    lock = cache.parent / f"{fp}.lock"
    if num_shards == 1:
        with exclusive(lock, wait=True):  # one extraction per cache; a second waits, then finds it done
            if not store.is_finished(cache):
                records = _extract_parts(cfg, source, cache, fp, part_size, 0, 1)
                _merge(cache, key, fp, source, records)
    else:
        records = _extract_parts(cfg, source, cache, fp, part_size, shard, num_shards)
        # parts other jobs finished meanwhile: each job writes before it checks, so the last one sees all
        records = {
            split: [r or store.read_part_meta(cache, split, i, fp, part_size) for i, r in enumerate(rs)]
            for split, rs in records.items()
        }
        missing = sum(r is None for rs in records.values() for r in rs)
        if missing:
            log.info(
                "shard %d/%d done; %d parts of %s are missing: the shard job that ends last merges",
                shard,
                num_shards,
                missing,
                cache,
            )
            return cache
        with exclusive(lock, wait=False) as held:
            if not held or store.is_finished(cache):
                return cache  # another job is merging, or has merged
            _merge(cache, key, fp, source, records)
    skipped = store.read_manifest(cache)["skipped"]["count"]
    if skipped:
        log.warning("%d source items were skipped (listed in %s)", skipped, cache / store.MANIFEST)
    log.info("feature cache written: %s", cache)
    return cache


def _merge(
    cache: Path, key: dict[str, Any], fp: str, source: Source, records: dict[str, list[dict[str, Any]]]
) -> None:
    manifest = {
        "format": key["format"],
        "fingerprint": fp,
        "key": key,
        "source": {"name": source.name, "version": source.version, "kind": getattr(source, "kind", None)},
        "class_names": list(source.class_names),
    }
    store.merge(cache, records, manifest)


def _extract_parts(
    cfg: DictConfig, source: Source, cache: Path, fp: str, part_size: int, shard: int, num_shards: int
) -> dict[str, list[dict[str, Any] | None]]:
    """Extract this job's missing parts; return every split's part records in order (None where missing)."""
    # a fresh cache needs the encoder at once (and fails before any progress bar if it cannot be had);
    # a resumed one builds it only if this job still has a part to extract
    fresh = not any(cache.glob("*/parts/*.json"))
    encoder: LayerEncoder | None = _build_encoder(cfg, source, cache) if fresh else None
    records: dict[str, list[dict[str, Any] | None]] = {}
    counter = 0  # parts across splits: the sharding unit
    damaged: list[str] = []  # parts found damaged (bad checksum, unreadable .json): extracted again
    for split in source.splits():
        records[split] = []
        with tqdm(
            total=source.num_items(split),
            desc=f"extract {split}",
            unit="item",
            dynamic_ncols=True,
            mininterval=1.0,
        ) as bar:
            for part, inputs in prefetched(parts(source, split, part_size)):
                mine, counter = counter % num_shards == shard, counter + 1
                record = store.read_part_meta(
                    cache, split, part.index, fp, part_size, damaged if mine else None
                )
                if record is None and mine:
                    if store.is_finished(cache):  # another shard job merged while this one iterated
                        return records
                    if encoder is None:
                        # building a model may draw from the global RNG: fork it, so a run that
                        # extracts first trains exactly like one that finds the cache
                        with torch.random.fork_rng():
                            encoder = _build_encoder(cfg, source, cache)
                    batch_size = int(cfg.encoder.get("batch_size") or 8)
                    ids = [r["id"] for r in part.rows]
                    features = encode_part(encoder, inputs, batch_size, ids, on_batch=bar.update)
                    info = {
                        "fingerprint": fp,
                        "part_size": part_size,
                        "index": part.index,
                        "encoder": encoder.fingerprint(),
                    }
                    store.write_part(cache, part, features, info)
                    record = store.read_part_meta(cache, split, part.index, fp, part_size)
                    if record is None:
                        raise DaamlabError(
                            f"part {part.index} of {cache / split} did not read back whole just after it "
                            "was written: check the disk under paths.cache_dir"
                        )
                else:  # found (or another shard's): no batches moved the bar
                    bar.update(len(inputs))
                records[split].append(record)
    if damaged:
        log.warning("%d damaged parts of %s were found (listed above); extracted again", len(damaged), cache)
    return records


def _build_encoder(cfg: DictConfig, source: Source, cache: Path) -> LayerEncoder:
    encoder_cfg = cfg.encoder
    if "kind" in encoder_cfg and encoder_cfg.kind is None:  # encoder=hf: the data decides
        encoder_cfg = OmegaConf.merge(encoder_cfg, {"kind": getattr(source, "kind", None)})
    encoder = build_encoder(encoder_cfg)
    kind = getattr(encoder, "kind", None)
    if kind is not None and kind != getattr(source, "kind", kind):
        raise DaamlabError(
            f"encoder '{cfg.encoder.get('name') or cfg.encoder.type}' takes {kind} input but data "
            f"'{source.name}' yields {source.kind}; choose a matching encoder (see configs/encoder/)"
        )
    size = estimate_bytes(source, encoder)
    if size is not None:
        free = shutil.disk_usage(_existing_parent(cache)).free
        log.info(
            "feature cache %s: about %s for %d layers x %d dims per item (float16); %s free",
            cache,
            _human(size),
            encoder.num_layers,
            encoder.dim,
            _human(free),
        )
        if size > free:
            raise DaamlabError(
                f"the feature cache needs about {_human(size)} but {cache.parent} has {_human(free)} free; "
                "set paths.cache_dir elsewhere, cache a layer subset (encoder.layers=[...]), or train "
                "without a cache (cache.enabled=false: the encoder runs inside the training loop)"
            )
    return encoder


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def extract(cfg: DictConfig) -> Path:
    """What extract.py runs."""
    validate(cfg)
    cache = build_cache(cfg, shard=int(cfg.cache.shard), num_shards=int(cfg.cache.num_shards))
    print(cache)
    return cache
