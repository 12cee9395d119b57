"""CIFAR-100 via HF `datasets` (hub `uoft-cs/cifar100` or a local copy in data.path): the paper's vision data.

50,000 train / 10,000 test images, 100 fine labels (`label_column: coarse_label` gives the 20 superclasses).
Items are RGB PIL images: grayscale, palette and RGBA inputs are converted (alpha composited on white) and
counted in `converted`; an image that does not decode is skipped and listed in `skipped`. The encoder's
image processor does the resizing and normalisation.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from daamlab.sources._hub import HubSource, load_splits

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, whatever the stored mode; transparent pixels become white rather than their hidden colour."""
    if image.mode == "RGB":
        return image
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class ImageDecoder:
    """Stored image cell (`{"bytes", "path"}` or a PIL image) -> RGB image; counts the modes it converted."""

    def __init__(self) -> None:
        self.converted: Counter[str] = Counter()  # original mode -> images converted to RGB

    def __call__(self, cell: Any) -> tuple[Image.Image | None, str | None]:
        try:
            if isinstance(cell, Image.Image):
                image = cell
            elif cell and cell.get("bytes"):
                image = Image.open(io.BytesIO(cell["bytes"]))
            elif cell and cell.get("path"):
                image = Image.open(cell["path"])
            else:
                return None, "no image data"
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            return None, f"unreadable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if image.mode != "RGB":
            self.converted[image.mode] += 1
        return to_rgb(image), None


class Cifar100Source(HubSource):
    @property
    def converted(self) -> Counter[str]:
        return self.convert.converted


def build(cfg: DictConfig) -> Cifar100Source:
    """`cfg` is the `data` config node (configs/data/cifar100.yaml)."""
    from datasets import Image as ImageFeature

    dataset, where = load_splits(cfg, "CIFAR-100")
    if cfg.input_column in dataset["train"].column_names:
        dataset = dataset.cast_column(cfg.input_column, ImageFeature(decode=False))  # we decode, per row
    return Cifar100Source(
        name="cifar100",
        kind="image",
        dataset=dataset,
        where=where,
        input_column=cfg.input_column,
        label_column=cfg.label_column,
        convert=ImageDecoder(),
        protocol={"input_column": cfg.input_column, "label_column": cfg.label_column},
    )
