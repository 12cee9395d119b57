"""Synthetic layer-stacked features for tests and smoke runs: an ordinary source whose items are
already (N, d) float32 arrays, read by the pass-through `features` encoder (configs/encoder/features.yaml),
so a toy run takes the whole path: source -> encoder -> cache -> datamodule -> head -> run record.

What the task rewards. Every cell is Gaussian noise; layers listed in `distractor_layers` carry
noise `distractor_std` times larger. The class lives only in `signal_layers` x the first
`signal_features` features: there, each class adds its own random +-`signal_strength` pattern.
Each signal layer sits inside a group of 3 (DAAM g=8 at N=24) whose other layers carry no signal,
so the signal moves that layer away from its group's mean and shows up in DAAM's
per-layer z-scores: a learned gate can widen or narrow per feature (xi) and re-centre (delta) to pass
the informative cells and damp the noisy ones; the fixed Gaussian (`gaussian`) applies the same gate
to every feature. Cross-layer attention (`mhsa`) can pool the signal layers; `none` leaves all of it
to the decoder. The data are a pure function of the source's settings (`seed` among them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item


@dataclass
class ToySource:
    num_train: int = 2000
    num_test: int = 500
    num_layers: int = 24
    dim: int = 64
    num_classes: int = 4
    signal_layers: Sequence[int] = (4, 7, 10)
    signal_features: int = 16
    signal_strength: float = 0.5
    distractor_layers: Sequence[int] = (12, 13, 14, 15, 16, 17)
    distractor_std: float = 3.0
    num_groups: int = 5
    seed: int = 0
    name: str = "toy"
    kind: str = field(default="features", init=False)

    def __post_init__(self) -> None:
        bad = [k for k in (*self.signal_layers, *self.distractor_layers) if not 0 <= k < self.num_layers]
        if bad or not 0 < self.signal_features <= self.dim:
            raise DaamlabError(
                f"toy data: layers {bad} are outside 0..{self.num_layers - 1} or signal_features="
                f"{self.signal_features} is outside 1..{self.dim}; fix data.signal_layers / "
                "data.distractor_layers / data.signal_features"
            )
        self.class_names = [f"class{c}" for c in range(self.num_classes)]

    @property
    def version(self) -> str:  # the settings are the data: any change is another cache
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return "toy-2-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    def splits(self) -> list[str]:
        return ["train", "test"]

    def num_items(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_test

    @cached_property
    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """split -> (features (n, N, d) float32, labels (n,)); both splits from one generator, in order."""
        rng = np.random.default_rng(self.seed)
        patterns = rng.choice([-1.0, 1.0], size=(self.num_classes, self.signal_features))
        layer_std = np.ones(self.num_layers)
        layer_std[list(self.distractor_layers)] = self.distractor_std
        out = {}
        for split in self.splits():
            n = self.num_items(split)
            labels = rng.integers(0, self.num_classes, size=n)
            x = rng.standard_normal((n, self.num_layers, self.dim)) * layer_std[None, :, None]
            for layer in self.signal_layers:
                x[:, layer, : self.signal_features] += self.signal_strength * patterns[labels]
            out[split] = (x.astype(np.float32), labels)
        return out

    def items(self, split: str) -> Iterator[Item]:
        x, labels = self._arrays[split]
        for i in range(len(labels)):
            group = f"group{i % self.num_groups + 1}"
            yield Item(id=f"{split}_{i:05d}", group=group, label=self.class_names[labels[i]], input=x[i])


def build(cfg: DictConfig) -> ToySource:
    data = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in data.items() if k in ToySource.__dataclass_fields__ and k != "kind"}
    return ToySource(**settings)
