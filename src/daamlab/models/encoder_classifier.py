"""EncoderClassifier: the frozen encoder in front of the same head, for training without the feature cache.

`cache.enabled=false` trains exactly the Classifier of the cached path (attention, decoder, loss,
metrics, gates: inherited, not copied); only `forward` differs: it takes a batch of raw inputs, runs
the frozen encoder (its `encode`, the code that fills the cache: inference mode, masked mean
pooling) and hands the (B, N, d) features to the head. The encoder is a plain attribute, not a
submodule, so it is never in train mode, never in the optimizer and never in a checkpoint: a
checkpoint holds the head only, and loading one rebuilds the encoder from its config
(`encoder_cfg`, saved in the checkpoint's hyperparameters), or takes one already built.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from daamlab.encoders import LayerEncoder, build_encoder
from daamlab.encoders.hf import HFEncoder
from daamlab.models.classifier import Classifier


class EncoderClassifier(Classifier):
    def __init__(
        self,
        *,
        encoder_cfg: dict[str, Any],
        layers: list[int] | None = None,
        round_fp16: bool = False,
        encoder: LayerEncoder | None = None,
        **head: Any,
    ) -> None:
        """`layers`: indices along the encoder's layer axis (data.layers); `round_fp16`: round the
        features to float16 as the cache stores them (cache.round_fp16); `head`: Classifier's arguments."""
        super().__init__(**head)
        self.save_hyperparameters(ignore=["encoder"])  # plain values only: checkpoints load weights_only
        self.encoder = encoder if encoder is not None else build_encoder(OmegaConf.create(encoder_cfg))
        self.layers, self.round_fp16 = layers, round_fp16

    def features(self, inputs: list[Any]) -> torch.Tensor:
        """Raw inputs -> (B, N, d) float32 on this module's device, outside autograd's reach."""
        self._encoder_follows_device()
        x = self.encoder.encode(inputs)  # (B, N_enc, d) float32 on the CPU, an inference tensor
        if self.layers is not None:
            x = x[:, self.layers]
        if self.round_fp16:
            x = x.half()
        return x.to(self.device, torch.float32, copy=True)  # a copy: a normal tensor autograd may save

    def forward(self, inputs: list[Any], return_gates: bool = False):
        return super().forward(self.features(inputs), return_gates)

    def _encoder_follows_device(self) -> None:
        # a torch encoder runs where the trainer put the head (each DDP rank on its own GPU)
        if isinstance(self.encoder, HFEncoder) and self.encoder.device != self.device:
            self.encoder.model.to(self.device)
