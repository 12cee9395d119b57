"""A small deterministic source of raw items (audio | image | text) for tests and smoke runs of the
encoder + cache path, with no dataset on disk.

Each class has its own signature: a tone frequency (audio), a colour (image), a word list (text).
Items vary in length (samples, pixels, words) so that batching pads and padding must not matter.
Item i of a split is a pure function of (seed, split, i). `num_broken` items per split are
"unreadable" and skipped, as a real source skips a corrupt file: recorded in `skipped`, never silent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item

VERSION = "synthetic-1"  # bump when the items change
SAMPLE_RATE = 16000
SHARED_WORDS = "the a of to and in is was for on with as by at from".split()
CLASS_WORDS = [
    "market stock shares bank profit trade price economy".split(),
    "match team goal season coach league player score".split(),
    "rocket planet orbit signal telescope galaxy probe star".split(),
    "election senate vote minister law court policy party".split(),
    "gene cell protein virus tissue enzyme neuron brain".split(),
]


class SyntheticSource:
    name = "synthetic"

    def __init__(
        self,
        *,
        kind: str,
        num_train: int,
        num_test: int,
        num_classes: int,
        num_groups: int,
        lengths: tuple[float, float],
        num_broken: int = 0,
        delay_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if kind not in ("audio", "image", "text"):
            raise DaamlabError(f"data.kind={kind!r} must be audio, image or text")
        if not 2 <= num_classes <= len(CLASS_WORDS):
            raise DaamlabError(f"data.num_classes={num_classes} must be in 2..{len(CLASS_WORDS)}")
        if len(lengths) != 2 or not 0 < lengths[0] <= lengths[1]:
            raise DaamlabError(f"data.lengths.{kind}={list(lengths)} must be [min, max] with 0 < min <= max")
        self.kind, self.seed = kind, seed
        self.sizes = {"train": num_train, "test": num_test}
        self.num_classes, self.num_groups = num_classes, num_groups
        self.lengths = (float(lengths[0]), float(lengths[1]))
        self.num_broken, self.delay_s = num_broken, delay_s
        self.class_names = [f"class{c}" for c in range(num_classes)]
        self.version = VERSION
        self.skipped: list[tuple[str, str]] = []

    def splits(self) -> list[str]:
        return ["train", "test"]

    def num_items(self, split: str) -> int:
        return self.sizes[split] - len(self._broken(split))

    def _broken(self, split: str) -> set[int]:
        rng = np.random.default_rng([self.seed, self.splits().index(split), 1])
        n = self.sizes[split]
        return set(rng.choice(n, size=min(self.num_broken, n), replace=False).tolist())

    def items(self, split: str) -> Iterator[Item]:
        broken = self._broken(split)
        for i in range(self.sizes[split]):
            item_id = f"{split}_{i:05d}"
            if i in broken:
                self.skipped.append((item_id, "unreadable (synthetic: data.num_broken)"))
                continue
            if self.delay_s:
                time.sleep(self.delay_s)  # a slow disk: lets tests interrupt an extraction part-way
            rng = np.random.default_rng([self.seed, self.splits().index(split), 0, i])
            label = int(rng.integers(self.num_classes))
            length = rng.uniform(*self.lengths)
            yield Item(
                id=item_id,
                group=f"group{i % self.num_groups + 1}",
                label=self.class_names[label],
                input=getattr(self, f"_{self.kind}")(rng, label, length),
            )

    def _audio(self, rng: np.random.Generator, label: int, seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        tone = np.sin(2 * np.pi * 220.0 * (label + 1) * t)
        return (0.5 * tone + 0.1 * rng.standard_normal(len(t))).astype(np.float32)

    def _image(self, rng: np.random.Generator, label: int, side: float) -> Image.Image:
        size = int(side)
        colour = np.zeros(3)
        colour[label % 3] = 200.0 if label < 3 else 120.0
        pixels = colour + rng.normal(0, 30, size=(size, size, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    def _text(self, rng: np.random.Generator, label: int, words: float) -> str:
        n = int(words)
        own = rng.choice(CLASS_WORDS[label], size=n)
        shared = rng.choice(SHARED_WORDS, size=n)
        return " ".join(np.where(rng.random(n) < 0.4, own, shared).tolist())


def build(cfg: DictConfig) -> SyntheticSource:
    return SyntheticSource(
        kind=cfg.kind,
        num_train=cfg.num_train,
        num_test=cfg.num_test,
        num_classes=cfg.num_classes,
        num_groups=cfg.num_groups,
        lengths=tuple(cfg.lengths[cfg.kind]),
        num_broken=cfg.num_broken,
        delay_s=cfg.delay_s,
        seed=cfg.seed,
    )
