"""What a data source yields: raw items with an id, a group and a label, split by split.

A source is the first stage of the data flow (docs/architecture.md): the encoder turns each item's raw input
into (N, d) pooled layer features and the cache stores them with the item's metadata. Sources do
no encoding and know nothing about the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class Item:
    id: str  # the source item (IEMOCAP: turn name); chunks of one item share it
    group: str  # the unit of folds (IEMOCAP: Session1..5); the split name when there are no folds
    label: str  # class name, one of Source.class_names
    input: Any  # np.float32 waveform at 16 kHz | PIL.Image (RGB) | str
    chunk: int = 0  # position of this chunk inside its item


class Source(Protocol):
    name: str
    kind: str  # "audio" | "image" | "text": which encoder preprocessing applies
    class_names: list[str]
    version: str  # changes whenever the items a source yields would change (part of the cache fingerprint)

    def splits(self) -> list[str]:
        """`["train", "test"]`, or `["all"]` for a grouped dataset whose folds come from `group`."""
        ...

    def items(self, split: str) -> Iterator[Item]:
        """Every item of a split, in a fixed order."""
        ...

    def num_items(self, split: str) -> int | None:
        """The item count if known without reading everything (for progress bars), else None."""
        ...


def waveform_16k(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz: stereo is mixed down, other rates are resampled (polyphase)."""
    from math import gcd

    from scipy.signal import resample_poly

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != 16000:
        g = gcd(rate, 16000)
        x = resample_poly(x, 16000 // g, rate // g).astype(np.float32)
    return x


def chunk_wave(wave: np.ndarray, seconds: float) -> list[np.ndarray]:
    """Consecutive pieces of at most `seconds` at 16 kHz; the last one holds the remainder (0: whole)."""
    if seconds <= 0:
        return [wave]
    size = round(seconds * 16000)
    return [wave[start : start + size] for start in range(0, len(wave), size)]


def count_chunks(frames: int, rate: int, seconds: float) -> int:
    """How many pieces chunk_wave makes of `frames` samples at `rate` once resampled to 16 kHz."""
    samples = round(frames * 16000 / rate)
    if samples == 0:
        return 0
    if seconds <= 0:
        return 1
    return -(-samples // round(seconds * 16000))
