"""data=image_folder: your own images, as a folder (torchvision's ImageFolder, HF's imagefolder).

Layouts of `data.root`, as audio_folder's: `<label>/<file>` (optionally under `train/ validation/
test/`), or a root `metadata.csv` / `metadata.jsonl` with `file_name`, the label column and optional
split and group columns. Any size and mode PIL reads: items are RGB (grey, palette and alpha
converted, counted in `converted`), turned upright by their EXIF orientation; the encoder resizes
them (efficientnet_lite: `encoder.resize=center_crop` for the crop its weights were trained with).
Files that do not decode as images are skipped.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig
from PIL import Image, ImageOps

from daamlab.sources.cifar100 import ImageDecoder
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


class ImageReader:
    def __init__(self) -> None:
        self.decode = ImageDecoder()  # counts converted modes

    def __call__(self, row: Row) -> tuple[list[Image.Image] | None, str | None]:
        image, reason = self.decode({"path": str(row.ref)})
        if image is None:
            return None, reason
        return [ImageOps.exif_transpose(image)], None


class ImageFolderSource(GenericSource):
    def items(self, split: str):
        yield from super().items(split)
        converted = self.reader.decode.converted
        if converted:
            log.info(
                "%s: converted to RGB so far: %s",
                self.name,
                ", ".join(f"{m} {n}" for m, n in sorted(converted.items())),
            )


def build(cfg: DictConfig) -> ImageFolderSource:
    """`cfg` is the `data` node (configs/data/image_folder.yaml)."""
    root = check_root(cfg.get("root"), "image")
    protocol = Protocol.from_cfg(cfg)
    rows, skipped, layout = list_folder(root, cfg)
    assignment = assign(rows, protocol, f"data.root={root}")
    assignment.skipped[:0] = skipped
    reader = ImageReader()
    source = ImageFolderSource(
        name=str(cfg.name),
        kind="image",
        where=f"data.root={root} ({layout})",
        assignment=assignment,
        read=reader,
        version_parts=[protocol.describe(), file_stamp(rows)],
    )
    source.reader = reader
    return source
