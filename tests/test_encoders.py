"""Frozen encoders (encoder.type=hf and tiny): shapes, masked pooling, padding invariance, layer
selection, loading a local copy through the real from_pretrained path, and the offline message."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from daamlab.encoders import build_encoder
from daamlab.encoders import hf as hf_module
from daamlab.encoders.hf import HFEncoder, grouped_conv1d_kept_fp32, run_in_fp32
from daamlab.errors import DaamlabError
from tests.conftest import ROOT

ARCHS = {"tiny_wavlm": "audio", "tiny_beit": "image", "tiny_llama": "text"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a shared 2-core machine


def encoder_cfg(name: str, **overrides):
    cfg = OmegaConf.load(ROOT / "configs" / "encoder" / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def inputs(kind: str, n: int = 5) -> list:
    """Items of very different lengths, so a batch of them pads most of its members."""
    rng = np.random.default_rng(0)
    if kind == "audio":
        return [rng.standard_normal(k).astype(np.float32) for k in (400, 4000, 1200, 8000, 2500)[:n]]
    if kind == "text":
        words = "the market rose as the team won a goal in the final match".split()
        return [" ".join(rng.choice(words, size=k)) for k in (2, 30, 7, 60, 15)[:n]]
    return [
        Image.fromarray(rng.integers(0, 255, (s, s + 3, 3), dtype=np.uint8)) for s in (12, 40, 20, 64, 33)[:n]
    ]


@pytest.fixture(scope="module")
def encoders():
    return {name: build_encoder(encoder_cfg(name)) for name in ARCHS}


@pytest.mark.parametrize("name", ARCHS)
def test_tiny_encoder_is_frozen_and_returns_pooled_layers(encoders, name):
    encoder = encoders[name]
    assert encoder.kind == ARCHS[name] and (encoder.num_layers, encoder.dim) == (4, 32)
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    x = encoder.encode(inputs(encoder.kind))
    assert x.shape == (5, 4, 32) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all() and x.std() > 0
    assert not torch.allclose(x[:, 0], x[:, -1])  # the layers differ


@pytest.mark.parametrize("name", ARCHS)
def test_padding_never_changes_an_items_features(encoders, name):
    encoder = encoders[name]
    items = inputs(encoder.kind)
    batched = encoder.encode(items)  # every item but the longest is padded here
    alone = torch.cat([encoder.encode([x]) for x in items])
    torch.testing.assert_close(batched, alone, atol=2e-5, rtol=1e-4)
    if encoder.kind == "audio":  # so the masked path (batched) is checked against the unmasked one (alone)
        assert (
            "attention_mask" in encoder._audio(items)[0]
            and "attention_mask" not in encoder._audio(items[:1])[0]
        )


def test_unmasked_pooling_would_differ_so_the_padding_test_has_teeth(encoders):
    """The same batch averaged over every frame (padding included, as the published code did) differs."""
    encoder = encoders["tiny_wavlm"]
    items = inputs("audio")
    kwargs, _ = encoder._audio(items)
    with torch.inference_mode():
        hidden = encoder.model(**kwargs, output_hidden_states=True).hidden_states
    unmasked = torch.stack([h.float().mean(1) for h in hidden[1:]], 1)
    assert not torch.allclose(unmasked[0], encoder.encode(items[:1])[0], atol=1e-3)


def test_audio_frame_mask_follows_the_conv_lengths(encoders):
    """An unpadded item: the pooled features are the plain mean over the model's own frames."""
    encoder = encoders["tiny_wavlm"]
    wave = inputs("audio")[2]
    with torch.inference_mode():
        hidden = encoder.model(
            input_values=torch.from_numpy(wave)[None], output_hidden_states=True
        ).hidden_states
    frames = int(encoder.model._get_feat_extract_output_lengths(torch.tensor(len(wave))))
    conv1 = (len(wave) - 10) // 5 + 1  # kernels (10, 4, 4), strides (5, 4, 4)
    assert hidden[1].shape[1] == frames == ((conv1 - 4) // 4 + 1 - 4) // 4 + 1 == 14
    expected = torch.stack([h[0].mean(0) for h in hidden[1:]])
    torch.testing.assert_close(encoder.encode([wave])[0], expected, atol=1e-5, rtol=1e-5)


def test_text_pads_right_with_a_pad_token_the_model_lacked(encoders):
    tokenizer = encoders["tiny_llama"].processor
    assert encoders["tiny_llama"].model.config.pad_token_id is None  # as Llama-2
    assert tokenizer.pad_token == "</s>" and tokenizer.padding_side == "right"
    ids = tokenizer(["a b", "a much longer text"], padding=True)["input_ids"]
    assert ids[0][0] == tokenizer.bos_token_id and ids[0][-1] == tokenizer.pad_token_id


def test_layer_selection_picks_transformer_layers(encoders):
    full = encoders["tiny_llama"]
    picked = build_encoder(encoder_cfg("tiny_llama", layers=[-1, 0]))
    items = inputs("text", 3)
    assert picked.num_layers == 2 and picked.fingerprint()["layers"] == [3, 0]
    torch.testing.assert_close(picked.encode(items), full.encode(items)[:, [3, 0]])
    with pytest.raises(DaamlabError, match=r"encoder.layers=\[0, 4\] must be distinct indices in 0..3"):
        build_encoder(encoder_cfg("tiny_llama", layers=[0, 4]))


def test_tiny_weights_are_seeded(encoders):
    same = build_encoder(encoder_cfg("tiny_beit"))
    other = build_encoder(encoder_cfg("tiny_beit", seed=1))
    assert same.fingerprint() == encoders["tiny_beit"].fingerprint()
    assert other.fingerprint()["weights_xxh3"] != same.fingerprint()["weights_xxh3"]


def test_bf16_runs_and_stays_close_to_fp32(encoders):
    items = inputs("audio", 3)
    low = build_encoder(encoder_cfg("tiny_wavlm", dtype="bf16"))
    assert next(low.model.parameters()).dtype == torch.bfloat16
    x = low.encode(items)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, encoders["tiny_wavlm"].encode(items), atol=0.1, rtol=0.1)
    assert low.preprocessing["grouped_conv1d"] == "fp32"  # its positional conv (below)


def test_grouped_conv1d_runs_in_fp32_inside_a_bf16_model():
    """torch's CPU bf16 grouped conv1d is wrong (relative error ~1 in torch 2.13); the encoder keeps
    such convs in fp32, with their original weights, between bf16 neighbours."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(8, 8, 5, padding=2, groups=4), torch.nn.Conv1d(8, 8, 1))
    x = torch.randn(2, 8, 40)
    reference = model(x)
    kept = grouped_conv1d_kept_fp32(model)
    assert list(kept) == [model[0]]  # groups=1 convs are right in bf16
    model.to(torch.bfloat16)
    for conv, state in kept.items():
        run_in_fp32(conv, state, torch.bfloat16)
    assert model[0].weight.dtype == torch.float32 and model[1].weight.dtype == torch.bfloat16
    y = model(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), reference, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("name", ARCHS)
def test_hf_loads_a_local_copy_through_from_pretrained(encoders, name, tmp_path):
    """encoder.type=hf with encoder.path: AutoModel + the kind's Auto preprocessor, as for WavLM/BEiT/Llama."""
    tiny = encoders[name]
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    cfg = OmegaConf.create(
        {"type": "hf", "model": f"tiny/{name}", "path": str(tmp_path), "revision": "main", "kind": tiny.kind}
        | {"dtype": "fp32", "device": "cpu", "layers": None, "batch_size": 4, "max_length": 512}
    )
    loaded = build_encoder(cfg)
    assert loaded.fingerprint()["weights_xxh3"] == tiny.fingerprint()["weights_xxh3"]
    items = inputs(tiny.kind, 3)
    torch.testing.assert_close(loaded.encode(items), tiny.encode(items))


def test_offline_hub_model_fails_fast_with_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DaamlabError) as e:
        build_encoder(encoder_cfg("wavlm_large"))
    assert time.monotonic() - started < 10
    message = str(e.value)
    assert "'microsoft/wavlm-large' is not available" in message and "HF_HUB_OFFLINE=1" in message
    assert "set encoder.path=/path/to/wavlm-large" in message and "\n" not in message


def test_gated_model_says_so(monkeypatch):
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        request = httpx2.Request("GET", "https://huggingface.co/api/models/meta-llama/Llama-2-13b-hf")
        raise GatedRepoError("403 gated", response=httpx2.Response(403, request=request))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "model_info", gated)
    with pytest.raises(
        DaamlabError, match=r"'meta-llama/Llama-2-13b-hf' is not available: it is gated.*encoder.path="
    ):
        build_encoder(encoder_cfg("llama2_13b", model="meta-llama/Llama-2-13b-hf"))


def test_bad_local_path_and_audio_model_without_frame_lengths(encoders, tmp_path):
    with pytest.raises(DaamlabError, match=f"encoder.path={tmp_path} has no config.json"):
        build_encoder(encoder_cfg("wavlm_large", path=str(tmp_path)))
    beit = encoders["tiny_beit"].model
    with pytest.raises(DaamlabError, match="has no conv feature-extractor lengths"):
        HFEncoder(beit, encoders["tiny_wavlm"].processor, kind="audio", identity={})
    assert hf_module.select_layers(None, 3) == [0, 1, 2]
