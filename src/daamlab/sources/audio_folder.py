"""data=audio_folder: your own audio, as a folder (the conventions of HF `datasets`' audiofolder).

Layouts of `data.root` (generic.py lists them and applies the protocol):
- class folders: `<label>/<file>`, optionally under split folders `train/ validation/ test/`;
- a `metadata.csv` / `metadata.jsonl` at the root: `file_name` (relative to the root), the label
  column (`data.label_column`) and optional split and group columns.
Any format soundfile reads (wav, flac, ogg...), any rate and channel count: resampled to 16 kHz and
mixed down to mono (both counted in `converted` and logged), then cut into chunks of at most
`data.chunk_seconds` as IEMOCAP's (chunks of a file share its id). Unreadable or empty files are skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import soundfile as sf
from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.base import chunk_wave, count_chunks, waveform_16k
from daamlab.sources.generic import (
    GenericSource,
    Protocol,
    Row,
    assign,
    check_root,
    file_stamp,
    list_folder,
)

log = logging.getLogger(__name__)


class AudioReader:
    """Row -> chunks of its 16 kHz mono waveform; counts what it converted."""

    def __init__(self, chunk_seconds: float) -> None:
        self.chunk_seconds = chunk_seconds
        self.converted: Counter[str] = Counter()  # "resampled from 44100 Hz", "mixed down from 2 channels"

    def decode(self, where: Any) -> tuple[np.ndarray | None, str | None]:
        """A path or file object -> 16 kHz mono float32, or (None, why)."""
        try:
            audio, rate = sf.read(where, dtype="float32", always_2d=True)  # (frames, channels)
        except (sf.SoundFileError, OSError, RuntimeError, TypeError) as e:
            why = str(e).rsplit(": ", 1)[-1].strip() or type(e).__name__  # libsndfile's reason, not the path
            return None, f"unreadable audio ({why})"
        if audio.size == 0:
            return None, "empty audio (0 samples)"
        if rate != 16000:
            self.converted[f"resampled from {rate} Hz"] += 1
        if audio.shape[1] > 1:
            self.converted[f"mixed down from {audio.shape[1]} channels"] += 1
        return waveform_16k(audio if audio.shape[1] > 1 else audio[:, 0], rate), None

    def chunk(self, wave: np.ndarray) -> list[np.ndarray]:
        return chunk_wave(wave, self.chunk_seconds)

    def __call__(self, row: Row) -> tuple[list[np.ndarray] | None, str | None]:
        wave, reason = self.decode(str(row.ref))
        if wave is None:
            return None, reason
        return self.chunk(wave), None

    def count(self, row: Row) -> int:
        """Chunks planned from the file header (no decoding); 0 for a file items() will skip."""
        try:
            info = sf.info(str(row.ref))
        except (sf.SoundFileError, OSError, RuntimeError):
            return 0
        return count_chunks(info.frames, info.samplerate, self.chunk_seconds)

    def report(self, name: str) -> None:
        if self.converted:
            log.info(
                "%s: converted to 16 kHz mono so far: %s",
                name,
                ", ".join(f"{k}: {n}" for k, n in sorted(self.converted.items())),
            )


def chunk_seconds_of(cfg: DictConfig) -> float:
    seconds = cfg.get("chunk_seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise DaamlabError(f"data.chunk_seconds={seconds!r} must be a number >= 0 (0 keeps whole files)")
    return float(seconds)


class AudioFolderSource(GenericSource):
    def items(self, split: str):
        yield from super().items(split)
        self.reader.report(self.name)


def build(cfg: DictConfig) -> AudioFolderSource:
    """`cfg` is the `data` node (configs/data/audio_folder.yaml)."""
    root = check_root(cfg.get("root"), "audio")
    protocol = Protocol.from_cfg(cfg)
    reader = AudioReader(chunk_seconds_of(cfg))
    rows, skipped, layout = list_folder(root, cfg)
    assignment = assign(rows, protocol, f"data.root={root}")
    assignment.skipped[:0] = skipped
    source = AudioFolderSource(
        name=str(cfg.name),
        kind="audio",
        where=f"data.root={root} ({layout})",
        assignment=assignment,
        read=reader,
        count_items=reader.count,
        version_parts=[protocol.describe(), reader.chunk_seconds, file_stamp(rows)],
    )
    source.reader = reader
    return source
