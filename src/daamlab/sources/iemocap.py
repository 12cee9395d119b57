"""IEMOCAP from the official release folder (`IEMOCAP_full_release`), the paper's speech protocol.

Layout read (the release's own):
    SessionN/dialog/EmoEvaluation/<dialog>.txt     one line per turn:
        [start - end]<TAB>turn_name<TAB>emotion<TAB>[V, A, D]
    SessionN/sentences/wav/<dialog>/<turn>.wav

Protocol (every part a `data.*` key): keep `classes` (neu, hap, ang, sad) after `merge` (exc -> hap),
drop every other label (counted in `dropped`); resample to 16 kHz mono; cut each utterance into
consecutive chunks of at most `chunk_seconds` (the paper's 5 s; the tail chunk keeps the label; 0
keeps whole utterances). One split `all`: `group` is the session, `id` the turn, so folds
(leave one session out) are chosen at training time and the chunks of an utterance share its id.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item, chunk_wave, count_chunks, waveform_16k

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WHERE_TO_GET = (
    "IEMOCAP is licensed by USC SAIL and cannot be downloaded here: request it at "
    "https://sail.usc.edu/iemocap/iemocap_release.htm, unpack IEMOCAP_full_release, then set "
    "data.root=/path/to/IEMOCAP_full_release (or the IEMOCAP_ROOT environment variable)"
)
# `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`
LABEL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[[^\]]*\]\s*$")


@dataclass(frozen=True)
class Utterance:
    turn: str  # e.g. Ses01F_impro01_F000
    session: str  # e.g. Session1
    label: str  # after the merge, one of the kept classes
    wav: Path


def parse_label_file(path: Path) -> tuple[list[tuple[str, str]], list[int]]:
    """(turn, emotion) for every label line, and the numbers of lines that look like one but don't parse.

    Headers (`% [START_TIME - ...`), evaluator lines (`C-E2:`, `A-F1:`) and blanks are not label lines.
    """
    turns, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.startswith("["):
            continue
        match = LABEL_LINE.match(line)
        if match:
            turns.append((match.group(3), match.group(4)))
        else:
            bad.append(number)
    return turns, bad


class IemocapSource:
    name = "iemocap"
    kind = "audio"

    def __init__(
        self,
        root: Path,
        *,
        sessions: Sequence[str],
        classes: Sequence[str],
        merge: Mapping[str, str],
        chunk_seconds: float,
    ) -> None:
        self.root, self.sessions = root, list(sessions)
        self.class_names, self.merge = list(classes), dict(merge)
        self.chunk_seconds = chunk_seconds
        self.dropped: Counter[str] = Counter()  # original label -> utterances outside the kept classes
        self._label_problems: list[tuple[str, str]] = []
        self.utterances = self._read_labels()
        # (path, reason) for every label line or wav not used, appended while items() runs (the cache
        # records the entries added during its pass); it only grows: iterating twice lists twice
        self.skipped: list[tuple[str, str]] = []
        self.class_counts: dict[str, dict[str, int]] = {}  # session -> class -> chunks yielded
        self._version: str | None = None
        log.info(
            "IEMOCAP: %d utterances in %d classes from %s; dropped %d outside them (%s)",
            len(self.utterances),
            len(self.class_names),
            root,
            sum(self.dropped.values()),
            ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none",
        )

    def _read_labels(self) -> list[Utterance]:
        utterances: list[Utterance] = []
        for session in self.sessions:
            label_dir = self.root / session / "dialog" / "EmoEvaluation"
            # only the top level: the Categorical/, Attribute/, Self-evaluation/ subfolders are per-evaluator
            files = sorted(p for p in label_dir.glob("*.txt") if not p.name.startswith("."))
            if not files:
                raise DaamlabError(
                    f"no label files in {label_dir}: expected <dialog>.txt files (e.g. Ses01F_impro01.txt) "
                    f"as in IEMOCAP_full_release/{session}/dialog/EmoEvaluation/"
                )
            found = 0
            for path in files:
                turns, bad = parse_label_file(path)
                self._label_problems += [(f"{path}:{n}", "unparseable label line") for n in bad]
                wav_dir = self.root / session / "sentences" / "wav" / path.stem
                for turn, emotion in turns:
                    found += 1
                    label = self.merge.get(emotion, emotion)
                    if label not in self.class_names:
                        self.dropped[emotion] += 1
                        continue
                    utterances.append(Utterance(turn, session, label, wav_dir / f"{turn}.wav"))
            if not found:
                raise DaamlabError(
                    f"the label files in {label_dir} hold no label lines; expected lines like "
                    "'[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]'"
                )
        return utterances

    @property
    def version(self) -> str:
        """Protocol + a digest of the label files and the wav names and sizes: another copy of the same
        release shares the cache, a changed file or protocol does not."""
        if self._version is None:
            digest = hashlib.sha256()
            protocol = (self.sessions, self.class_names, sorted(self.merge.items()), self.chunk_seconds)
            digest.update(repr(protocol).encode())
            for session in self.sessions:
                for path in sorted((self.root / session / "dialog" / "EmoEvaluation").glob("*.txt")):
                    digest.update(path.name.encode() + path.read_bytes())
            for utt in self.utterances:
                size = utt.wav.stat().st_size if utt.wav.is_file() else -1
                digest.update(f"{utt.turn}:{size}".encode())
            self._version = f"iemocap-1-{digest.hexdigest()[:16]}"
        return self._version

    def splits(self) -> list[str]:
        return ["all"]

    def _check_split(self, split: str) -> None:
        if split != "all":
            raise DaamlabError(f"IEMOCAP has one split 'all' (folds come from data.fold), not '{split}'")

    def num_chunks(self, frames: int, rate: int) -> int:
        return count_chunks(frames, rate, self.chunk_seconds)

    def num_items(self, split: str) -> int | None:
        """Chunks planned from the wav headers (no audio is decoded)."""
        self._check_split(split)
        total = 0
        for utt in self.utterances:
            try:
                info = sf.info(str(utt.wav))
            except (sf.SoundFileError, OSError):
                continue  # reported as skipped when items() reaches it
            total += self.num_chunks(info.frames, info.samplerate)
        return total

    def _read(self, utt: Utterance) -> np.ndarray | None:
        """The utterance at 16 kHz mono, or None (recorded in `skipped`) if it cannot be used."""
        if not utt.wav.is_file():
            self.skipped.append((str(utt.wav), "missing wav file"))
            return None
        try:
            audio, rate = sf.read(str(utt.wav), dtype="float32", always_2d=False)
        except (sf.SoundFileError, OSError, RuntimeError) as e:
            why = (
                str(e).rsplit(": ", 1)[-1].strip() or type(e).__name__
            )  # libsndfile's reason, not the path again
            self.skipped.append((str(utt.wav), f"unreadable wav ({why})"))
            return None
        if audio.size == 0:
            self.skipped.append((str(utt.wav), "empty wav (0 samples)"))
            return None
        return waveform_16k(audio, rate)

    def chunks(self, wave: np.ndarray) -> list[np.ndarray]:
        """Consecutive pieces of at most chunk_seconds; the last one holds the remainder."""
        return chunk_wave(wave, self.chunk_seconds)

    def items(self, split: str) -> Iterator[Item]:
        self._check_split(split)
        first_skip = len(self.skipped)
        self.skipped += self._label_problems
        counts: dict[str, Counter[str]] = {session: Counter() for session in self.sessions}
        for utt in self.utterances:
            wave = self._read(utt)
            if wave is None:
                continue
            for number, piece in enumerate(self.chunks(wave)):
                counts[utt.session][utt.label] += 1
                yield Item(id=utt.turn, group=utt.session, label=utt.label, input=piece, chunk=number)
        self.class_counts = {s: {c: counts[s][c] for c in self.class_names} for s in self.sessions}
        self._report(self.skipped[first_skip:])

    def _report(self, skipped: list[tuple[str, str]]) -> None:
        for session, counts in self.class_counts.items():
            log.info(
                "IEMOCAP %s chunks per class: %s", session, ", ".join(f"{c} {n}" for c, n in counts.items())
            )
        if skipped:
            log.warning(
                "IEMOCAP: skipped %d input(s): %s",
                len(skipped),
                "; ".join(f"{path} ({reason})" for path, reason in skipped),
            )


def _root(value: str | None) -> Path:
    if not value:
        raise DaamlabError(f"data.root is not set. {WHERE_TO_GET}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DaamlabError(f"data.root={root} is not a folder. {WHERE_TO_GET}")
    return root


def _check_layout(root: Path, sessions: Sequence[str]) -> None:
    missing = [s for s in sessions if not (root / s).is_dir()]
    if missing:
        nested = root / "IEMOCAP_full_release"
        hint = f"; did you mean data.root={nested}?" if nested.is_dir() else ""
        found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:10]
        raise DaamlabError(
            f"data.root={root} does not look like IEMOCAP_full_release: expected the folders "
            f"{', '.join(sessions)} in it, missing {', '.join(missing)} "
            f"(found: {', '.join(found) or 'nothing'}){hint}"
        )
    for session in sessions:
        for sub in ("dialog/EmoEvaluation", "sentences/wav"):
            if not (root / session / sub).is_dir():
                raise DaamlabError(
                    f"{root / session / sub} is missing: IEMOCAP_full_release/{session}/ should hold "
                    "dialog/EmoEvaluation/*.txt (labels) and sentences/wav/<dialog>/<turn>.wav (audio)"
                )


def build(cfg: DictConfig) -> IemocapSource:
    """`cfg` is the `data` config node (configs/data/iemocap.yaml)."""
    sessions = list(cfg.sessions)
    root = _root(cfg.get("root"))
    _check_layout(root, sessions)
    classes = list(cfg.classes)
    merge = OmegaConf.to_container(cfg.merge) if cfg.get("merge") else {}
    unknown = sorted(set(merge.values()) - set(classes))
    if unknown:
        raise DaamlabError(f"data.merge maps into {unknown}, which are not in data.classes={classes}")
    chunk_seconds = float(cfg.chunk_seconds)
    if chunk_seconds < 0:
        raise DaamlabError(f"data.chunk_seconds must be >= 0 (0 keeps whole utterances), got {chunk_seconds}")
    return IemocapSource(root, sessions=sessions, classes=classes, merge=merge, chunk_seconds=chunk_seconds)
