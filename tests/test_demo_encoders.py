"""Demo encoders: Whisper from CTranslate2 files, EfficientNet-Lite blocks, MiniLM from its package.

Fast tests use tiny random models written in the real formats (a CTranslate2 model.bin, an
EfficientNet state dict); `slow` tests load the real packaged weights (CI installs `.[demo]`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from daamlab.encoders import build_encoder
from daamlab.encoders.whisper_ct2 import (
    WhisperCT2Encoder,
    clip_frames,
    load_ct2_whisper_encoder,
    read_ct2_model,
)
from daamlab.errors import DaamlabError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"dim": 16, "heads": 2, "layers": 2, "mels": 80, "positions": 100}  # a 2 s window, for speed


def encoder_config(name: str, **overrides):
    return OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "encoder" / f"{name}.yaml"), overrides)


# --- CTranslate2 Whisper: a tiny random model in the real file format -------------------------


def ct2_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """A random Whisper encoder as CTranslate2 names it (fp16, fused qkv, zero key bias)."""
    rng = np.random.default_rng(seed)
    d, mels = TINY["dim"], TINY["mels"]

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    v = {
        "encoder/conv1/weight": w(d, mels, 3),
        "encoder/conv1/bias": w(d),
        "encoder/conv2/weight": w(d, d, 3),
        "encoder/conv2/bias": w(d),
        "encoder/position_encodings/encodings": w(TINY["positions"], d),
        "encoder/layer_norm/gamma": (1 + w(d)).astype(np.float16),
        "encoder/layer_norm/beta": w(d),
        "encoder/num_heads": np.array(TINY["heads"], dtype=np.int32),
    }
    for i in range(TINY["layers"]):
        p = f"encoder/layer_{i}/"
        qkv_bias = w(3 * d)
        qkv_bias[d : 2 * d] = 0  # Whisper's key projection has no bias
        v |= {
            p + "self_attention/layer_norm/gamma": (1 + w(d)).astype(np.float16),
            p + "self_attention/layer_norm/beta": w(d),
            p + "self_attention/linear_0/weight": w(3 * d, d),
            p + "self_attention/linear_0/bias": qkv_bias,
            p + "self_attention/linear_1/weight": w(d, d),
            p + "self_attention/linear_1/bias": w(d),
            p + "ffn/layer_norm/gamma": (1 + w(d)).astype(np.float16),
            p + "ffn/layer_norm/beta": w(d),
            p + "ffn/linear_0/weight": w(4 * d, d),
            p + "ffn/linear_0/bias": w(4 * d),
            p + "ffn/linear_1/weight": w(d, 4 * d),
            p + "ffn/linear_1/bias": w(d),
        }
    return v


def ct2_bytes(variables: dict[str, np.ndarray]) -> bytes:
    """Serialise as ctranslate2/specs/model_spec.py::_serialize does (format version 6)."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int32): 3, np.dtype(np.float16): 4}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("H", len(raw)) + raw

    out = struct.pack("I", 6) + string("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, array in variables.items():
        out += string(name) + struct.pack("B", array.ndim) + struct.pack(f"{array.ndim}I", *array.shape)
        out += struct.pack("B", dtype_ids[array.dtype]) + struct.pack("I", array.nbytes) + array.tobytes()
    return out


def to_transformers(ours: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """transformers' WhisperEncoder with our converted weights (q/k/v split from the fused qkv)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    d, layers = ours.final_norm.normalized_shape[0], len(ours.blocks)
    config = WhisperConfig(
        d_model=d,
        encoder_layers=layers,
        encoder_attention_heads=ours.blocks[0].num_heads,
        encoder_ffn_dim=4 * d,
        num_mel_bins=ours.conv1.in_channels,
        max_source_positions=ours.positions.shape[0],
        attn_implementation="eager",
    )
    s = ours.state_dict()
    state = {
        "conv1.weight": s["conv1.weight"],
        "conv1.bias": s["conv1.bias"],
        "conv2.weight": s["conv2.weight"],
        "conv2.bias": s["conv2.bias"],
        "embed_positions.weight": s["positions"],
        "layer_norm.weight": s["final_norm.weight"],
        "layer_norm.bias": s["final_norm.bias"],
    }
    for i in range(layers):
        ob, hb = f"blocks.{i}.", f"layers.{i}."
        qw, kw, vw = s[ob + "qkv.weight"].split(d)
        qb, kb, vb = s[ob + "qkv.bias"].split(d)
        assert torch.all(kb == 0)  # transformers has no key bias: the conversion must not lose one
        state |= {
            hb + "self_attn.q_proj.weight": qw,
            hb + "self_attn.q_proj.bias": qb,
            hb + "self_attn.k_proj.weight": kw,
            hb + "self_attn.v_proj.weight": vw,
            hb + "self_attn.v_proj.bias": vb,
            hb + "self_attn.out_proj.weight": s[ob + "out.weight"],
            hb + "self_attn.out_proj.bias": s[ob + "out.bias"],
            hb + "self_attn_layer_norm.weight": s[ob + "attn_norm.weight"],
            hb + "self_attn_layer_norm.bias": s[ob + "attn_norm.bias"],
            hb + "fc1.weight": s[ob + "fc1.weight"],
            hb + "fc1.bias": s[ob + "fc1.bias"],
            hb + "fc2.weight": s[ob + "fc2.weight"],
            hb + "fc2.bias": s[ob + "fc2.bias"],
            hb + "final_layer_norm.weight": s[ob + "mlp_norm.weight"],
            hb + "final_layer_norm.bias": s[ob + "mlp_norm.bias"],
        }
    reference = WhisperEncoder(config).eval()
    reference.load_state_dict(state, strict=True)
    return reference, state


def assert_equals_transformers(ours: torch.nn.Module, mel: torch.Tensor, atol: float) -> None:
    reference, _ = to_transformers(ours)
    with torch.no_grad():
        expected = reference(mel, output_hidden_states=True).hidden_states
        got = ours(mel)
    assert len(got) == len(expected) == len(ours.blocks) + 1
    for k, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == b.shape == (mel.shape[0], mel.shape[2] // 2, ours.final_norm.normalized_shape[0])
        assert torch.allclose(a, b, atol=atol, rtol=1e-4), f"hidden state {k}: max diff {(a - b).abs().max()}"


def test_ct2_reader_and_conversion_equal_transformers_on_a_full_window():
    variables = ct2_variables()
    read = read_ct2_model(ct2_bytes(variables))
    assert read.keys() == variables.keys() and all(np.array_equal(read[k], variables[k]) for k in read)
    ours = load_ct2_whisper_encoder(read)
    assert len(ours.blocks) == TINY["layers"] and ours.blocks[0].num_heads == TINY["heads"]
    mel = torch.randn(2, TINY["mels"], 2 * TINY["positions"])  # transformers takes only the full window
    assert_equals_transformers(ours, mel, atol=1e-4)


def test_ct2_reader_refuses_other_models():
    data = ct2_bytes(ct2_variables()).replace(b"WhisperSpec", b"TransformerS", 1)
    with pytest.raises(DaamlabError, match="WhisperSpec"):
        read_ct2_model(data)


@pytest.fixture(scope="module")
def tiny_whisper() -> WhisperCT2Encoder:
    model = load_ct2_whisper_encoder(read_ct2_model(ct2_bytes(ct2_variables())))
    return WhisperCT2Encoder("tiny", model, "none", torch.device("cpu"), batch_size=4)


@pytest.mark.parametrize("samples", [1, 159, 160, 161, 16000, 31_999])
def test_cropped_log_mel_equals_the_30s_window(tiny_whisper, samples):
    wave = np.random.default_rng(samples).standard_normal(samples).astype(np.float32) * 0.1
    mel, frames = tiny_whisper.log_mel([wave])
    full = tiny_whisper.features([wave], sampling_rate=16000, return_tensors="pt").input_features
    assert frames.tolist() == [clip_frames(samples)] and frames[0] % 2 == 0 and frames[0] * 160 >= samples
    assert mel.shape == (1, 80, frames[0]) and torch.allclose(mel, full[:, :, : frames[0]], atol=1e-5)


def test_whisper_clip_features_do_not_depend_on_the_batch(tiny_whisper):
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 31_000, 16_161)]
    batch = tiny_whisper.encode(waves)
    assert batch.shape == (3, TINY["layers"], TINY["dim"]) and batch.dtype == torch.float32
    for i, wave in enumerate(waves):
        alone = tiny_whisper.encode([wave])[0]
        assert torch.allclose(alone, batch[i], atol=1e-5), (alone - batch[i]).abs().max()
    assert torch.equal(tiny_whisper.encode(waves), batch)  # deterministic


def test_whisper_rejects_clips_longer_than_its_window(tiny_whisper):
    with pytest.raises(DaamlabError, match="1 sample to 2 s long"):
        tiny_whisper.encode([np.zeros(16000 * 3, dtype=np.float32)])


@pytest.fixture
def fake_whisper_package(tmp_path, monkeypatch):
    """An installed package holding a CTranslate2 model.bin in two parts, as the PyPI upload does."""
    data = ct2_bytes(ct2_variables())
    for k, chunk in enumerate((data[:1000], data[1000:]), start=1):
        package = tmp_path / f"fake_whisper_part{k}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.bin.part{k}").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path))
    import hashlib

    return encoder_config(
        "whisper_base",
        model_files=["fake_whisper_part1/data/model.bin.part1", "fake_whisper_part2/data/model.bin.part2"],
        pip=["fake-whisper-part1", "fake-whisper-part2"],
        sha256=hashlib.sha256(data).hexdigest(),
        device="cpu",
    )


def test_whisper_build_reads_the_parts_and_checks_the_sha256(fake_whisper_package):
    rng_before = torch.get_rng_state()
    encoder = build_encoder(fake_whisper_package)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training after extraction starts from the seed
    assert (encoder.num_layers, encoder.dim) == (TINY["layers"], TINY["dim"])
    assert encoder.fingerprint()["sha256"] == fake_whisper_package.sha256
    wrong = OmegaConf.merge(fake_whisper_package, {"sha256": "0" * 64})
    with pytest.raises(DaamlabError, match="sha256 .* expected 0000"):
        build_encoder(wrong)


def test_missing_model_package_names_what_to_install(fake_whisper_package):
    missing = OmegaConf.merge(
        fake_whisper_package, {"model_files": ["no_such_pkg/a", "no_such_pkg/b"], "pip": ["no-such-pkg", "x"]}
    )
    with pytest.raises(DaamlabError, match=r"'no-such-pkg' is not installed.*\.\[demo\]"):
        build_encoder(missing)


# --- EfficientNet-Lite blocks --------------------------------------------------------------------


def fashion_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).convert("RGB") for _ in range(n)]


LITE0_WIDTHS = [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]


def check_block_features(encoder, images: list[Image.Image]) -> torch.Tensor:
    x = encoder.encode(images)
    assert encoder.layer_widths == LITE0_WIDTHS and encoder.fingerprint()["layer_widths"] == LITE0_WIDTHS
    assert (encoder.num_layers, encoder.dim) == (16, 320) and x.shape == (len(images), 16, 320)
    for k, width in enumerate(LITE0_WIDTHS):
        assert torch.all(x[:, k, width:] == 0) and torch.any(x[:, k, :width] != 0)  # zero padding only
    assert torch.equal(encoder.encode(images), x)  # deterministic
    assert torch.allclose(
        encoder.encode(images[:1])[0], x[0], rtol=1e-4, atol=1e-4
    )  # batch mates do not matter
    return x


def test_efficientnet_lite0_blocks_real_weights():
    encoder = build_encoder(encoder_config("efficientnet_lite0", image_size=64, device="cpu"))
    check_block_features(encoder, fashion_images(3))
    wrong = encoder_config("efficientnet_lite0", sha256="f" * 64)
    with pytest.raises(DaamlabError, match="sha256"):
        build_encoder(wrong)


# --- real packaged weights (slow) -----------------------------------------------------------------


@pytest.mark.slow
def test_whisper_base_real_weights_layers_and_determinism():
    encoder = build_encoder(encoder_config("whisper_base", device="cpu"))
    assert (encoder.num_layers, encoder.dim) == (6, 512)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.05 for n in (12_000, 30_000)]
    x = encoder.encode(waves)
    assert x.shape == (2, 6, 512) and torch.isfinite(x).all()
    assert torch.equal(encoder.encode(waves), x)
    assert torch.allclose(encoder.encode(waves[:1])[0], x[0], atol=1e-4)


@pytest.mark.slow
def test_whisper_base_conversion_equals_transformers_on_a_30s_window():
    from daamlab.encoders.packaged import package_file, read_checked

    cfg = encoder_config("whisper_base")
    paths = [package_file(spec, pip) for spec, pip in zip(cfg.model_files, cfg.pip, strict=True)]
    ours = load_ct2_whisper_encoder(read_ct2_model(read_checked(paths, cfg.sha256, "whisper")))
    assert (len(ours.blocks), ours.final_norm.normalized_shape[0], ours.blocks[0].num_heads) == (6, 512, 8)
    from transformers import WhisperFeatureExtractor

    t = np.arange(16000 * 3) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    mel = WhisperFeatureExtractor(feature_size=80)(
        wave, sampling_rate=16000, return_tensors="pt"
    ).input_features
    assert mel.shape == (1, 80, 3000)
    assert_equals_transformers(ours, mel, atol=2e-3)  # activations reach about 25


@pytest.mark.slow
def test_minilm_l6_real_weights_layers_and_determinism():
    encoder = build_encoder(encoder_config("minilm_l6", device="cpu"))
    assert (encoder.num_layers, encoder.dim) == (6, 384)
    texts = ["The senate passed the budget bill.", "He scored twice in the second half of the final game."]
    x = encoder.encode(texts)
    assert x.shape == (2, 6, 384) and torch.isfinite(x).all()
    assert torch.equal(encoder.encode(texts), x)
    assert torch.allclose(encoder.encode(texts[:1])[0], x[0], atol=1e-5)  # padding is masked out
    wrong = encoder_config("minilm_l6", sha256="0" * 64)
    with pytest.raises(DaamlabError, match="sha256"):
        build_encoder(wrong)
