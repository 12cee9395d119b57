"""On-the-fly augmentation of raw training items: the uncached mode only (`cache.enabled=false`).

Off by default (`augment=none`). A cached feature is computed once, so it cannot change per epoch;
these change the raw input every time an item is drawn, before the frozen encoder sees it:
- `augment=noise` (audio): additive white Gaussian noise at an SNR drawn uniformly from `snr_db` dB.
- `augment=crop_flip` (image): a random crop keeping a share of the area drawn from `scale` (same
  aspect ratio, the image processor resizes it), then a horizontal flip with probability `flip_p`.
Only training items are augmented; each draw uses a generator seeded by (seed, epoch, row), so a
resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from daamlab.errors import DaamlabError

Augment = Callable[[Any, np.random.Generator], Any]  # (raw input, generator) -> raw input


def add_noise(wave: np.ndarray, rng: np.random.Generator, *, snr_db: Sequence[float]) -> np.ndarray:
    """wave + white noise whose power is the wave's power / 10^(snr/10)."""
    snr = rng.uniform(snr_db[0], snr_db[1])
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    sigma = rms / 10 ** (snr / 20)
    return (wave + sigma * rng.standard_normal(wave.shape)).astype(np.float32)


def crop_flip(
    image: Image.Image, rng: np.random.Generator, *, scale: Sequence[float], flip_p: float
) -> Image.Image:
    w, h = image.size
    side = np.sqrt(rng.uniform(scale[0], scale[1]))  # the kept share of each side
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    if rng.random() < flip_p:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def _range(cfg: dict[str, Any], key: str, low: float, high: float) -> list[float]:
    value = cfg.get(key)
    if not (isinstance(value, list | tuple) and len(value) == 2 and low <= value[0] <= value[1] <= high):
        raise DaamlabError(f"augment.{key}={value!r} must be [min, max] with {low} <= min <= max <= {high}")
    return [float(value[0]), float(value[1])]


def build_augment(cfg: dict[str, Any] | None, kind: str) -> Augment | None:
    """The augmentation `cfg` (the augment group) names for a source of `kind`, or None for `none`."""
    name = (cfg or {}).get("name", "none")
    if name == "none":
        return None
    takes = {"noise": "audio", "crop_flip": "image"}
    if name not in takes:
        raise DaamlabError(f"unknown augment '{name}'; choose one of: none, {', '.join(takes)}")
    if takes[name] != kind:
        raise DaamlabError(
            f"augment={name} takes {takes[name]} input but the data yields {kind}; "
            "choose an augmentation for this modality (see configs/augment/) or augment=none"
        )
    if name == "noise":
        return partial(add_noise, snr_db=_range(cfg, "snr_db", -50.0, 100.0))
    flip_p = cfg.get("flip_p")
    if not isinstance(flip_p, int | float) or not 0 <= flip_p <= 1:
        raise DaamlabError(f"augment.flip_p={flip_p!r} must be a probability in [0, 1]")
    return partial(crop_flip, scale=_range(cfg, "scale", 1e-3, 1.0), flip_p=float(flip_p))
