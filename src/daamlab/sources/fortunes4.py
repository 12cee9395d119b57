"""Four fortune-cookie topics from Debian's `fortunes`: the demo stand-in for AG News (4 topics).

`/usr/share/games/fortunes/<topic>` files hold cookies separated by lines of `%`. Each cookie's
whitespace is collapsed; cookies of fewer than `data.min_chars` characters are dropped, and so are
repeats (a text seen before in any topic): both counted in `skipped`. About 2,090 texts remain
(politics 697, sports 146, work 628, science 621). A fixed stratified split (`data.test_fraction`
of each topic to `test`, drawn with `data.seed`) gives `train` and `test`, as AG News has.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item

log = logging.getLogger(__name__)

INSTALL_HINT = "install the Debian package: sudo apt-get install fortunes (or `make run`)"


def read_cookies(path: Path) -> list[str]:
    """The cookies of one fortune file, whitespace collapsed, in file order (empty ones are separators)."""
    cookies, lines = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines() + ["%"]:
        if line.strip() == "%":
            text = " ".join(" ".join(lines).split())
            if text:
                cookies.append(text)
            lines = []
        else:
            lines.append(line)
    return cookies


class Fortunes4Source:
    name = "fortunes4"
    kind = "text"

    def __init__(self, root: Path, topics: Sequence[str], min_chars: int, test_fraction: float, seed: int):
        missing = [t for t in topics if not (root / t).is_file()]
        if missing:
            raise DaamlabError(f"fortune files {missing} are not in {root}; {INSTALL_HINT}")
        if not 0 < test_fraction < 1:
            raise DaamlabError(f"data.test_fraction must be between 0 and 1, got {test_fraction}")
        self.class_names = list(topics)
        self.skipped: list[tuple[str, str]] = []  # (id, reason)
        texts: dict[str, list[tuple[str, str]]] = {t: [] for t in topics}  # topic -> (id, text)
        seen: set[str] = set()
        digest = hashlib.sha256(repr((list(topics), min_chars, test_fraction, seed)).encode())
        for topic in topics:
            digest.update((root / topic).read_bytes())
            for k, text in enumerate(read_cookies(root / topic)):
                item_id = f"{topic}_{k:04d}"
                if len(text) < min_chars:
                    self.skipped.append((item_id, f"shorter than {min_chars} characters"))
                elif text in seen:
                    self.skipped.append((item_id, "repeats an earlier text"))
                else:
                    seen.add(text)
                    texts[topic].append((item_id, text))
        self.version = f"fortunes4-1-{digest.hexdigest()[:16]}"
        rng = np.random.default_rng(seed)
        self.rows: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}  # (id, topic, text)
        for topic in topics:
            is_test = np.zeros(len(texts[topic]), dtype=bool)
            is_test[rng.permutation(len(is_test))[: round(test_fraction * len(is_test))]] = True
            for (item_id, text), test in zip(texts[topic], is_test, strict=True):
                self.rows["test" if test else "train"].append((item_id, topic, text))
        log.info(
            "fortunes4: %d train / %d test texts; skipped %d (%d too short, %d repeats)",
            len(self.rows["train"]),
            len(self.rows["test"]),
            len(self.skipped),
            sum("shorter" in reason for _, reason in self.skipped),
            sum("repeats" in reason for _, reason in self.skipped),
        )

    def splits(self) -> list[str]:
        return ["train", "test"]

    def num_items(self, split: str) -> int | None:
        return len(self.rows[split])

    def items(self, split: str) -> Iterator[Item]:
        for item_id, topic, text in self.rows[split]:
            yield Item(id=item_id, group=split, label=topic, input=text)


def build(cfg: DictConfig) -> Fortunes4Source:
    return Fortunes4Source(Path(cfg.root), cfg.topics, cfg.min_chars, cfg.test_fraction, cfg.seed)
