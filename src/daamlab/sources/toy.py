"""Synthetic layer-stacked features for tests and smoke runs: (n, N, d), no encoder needed.

What the task rewards. Every cell is Gaussian noise; layers listed in `distractor_layers` carry
noise `distractor_std` times larger. The class lives only in `signal_layers` x the first
`signal_features` features: there, each class adds its own random +-`signal_strength` pattern.
Each signal layer sits inside a group of 3 (DAAM g=8 at N=24) whose other layers carry no signal,
so the signal moves that layer away from its group's mean and shows up in DAAM's
per-layer z-scores: a learned gate can widen or narrow per feature (xi) and re-centre (delta) to pass
the informative cells and damp the noisy ones; the fixed Gaussian (`gaussian`) applies the same gate
to every feature. Cross-layer attention (`mhsa`) can pool the signal layers; `none` leaves all of it
to the decoder. The data are a pure function of `seed`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from daamlab.features.featureset import FeatureSet, FeatureSplit
from daamlab.errors import DaamlabError


def make_toy(
    *,
    num_train: int = 2000,
    num_test: int = 500,
    num_layers: int = 24,
    dim: int = 64,
    num_classes: int = 4,
    signal_layers: Sequence[int] = (4, 7, 10),
    signal_features: int = 16,
    signal_strength: float = 0.5,
    distractor_layers: Sequence[int] = (12, 13, 14, 15, 16, 17),
    distractor_std: float = 3.0,
    num_groups: int = 5,
    seed: int = 0,
) -> FeatureSet:
    bad = [k for k in (*signal_layers, *distractor_layers) if not 0 <= k < num_layers]
    if bad or not 0 < signal_features <= dim:
        raise DaamlabError(
            f"toy data: layers {bad} are outside 0..{num_layers - 1} or signal_features={signal_features} "
            f"is outside 1..{dim}; fix data.signal_layers / data.distractor_layers / data.signal_features"
        )
    rng = np.random.default_rng(seed)
    patterns = rng.choice([-1.0, 1.0], size=(num_classes, signal_features))  # one sign pattern per class
    layer_std = np.ones(num_layers)
    layer_std[list(distractor_layers)] = distractor_std

    def split(n: int, name: str) -> FeatureSplit:
        labels = rng.integers(0, num_classes, size=n)
        x = rng.standard_normal((n, num_layers, dim)) * layer_std[None, :, None]
        for layer in signal_layers:
            x[:, layer, :signal_features] += signal_strength * patterns[labels]
        ids = np.array([f"{name}_{i:05d}" for i in range(n)])
        groups = np.array([f"group{i % num_groups + 1}" for i in range(n)])
        return FeatureSplit(x.astype(np.float32), labels.astype(np.int64), ids, groups)

    return FeatureSet(
        name="toy",
        class_names=[f"class{c}" for c in range(num_classes)],
        splits={"train": split(num_train, "train"), "test": split(num_test, "test")},
        info={"seed": seed},
    )
