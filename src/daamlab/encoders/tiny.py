"""encoder.type=tiny: small random models from the real transformers config classes, built in memory.

`arch: wavlm | beit | llama` stands in for WavLM-Large / BEiT-Large / Llama-2 in tests and smoke
runs: the same model classes, feature extractor, image processor and tokenizer code paths as the
real encoders (conv frame lengths, attention masks, pad tokens), with 2-4 layers and small widths,
seeded, and no download. The features mean nothing; their shapes and masking behave like the real ones.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from daamlab.encoders.hf import HFEncoder, from_config, weights_checksum
from daamlab.errors import DaamlabError

KIND = {"wavlm": "audio", "beit": "image", "llama": "text"}


def wavlm(num_layers: int, dim: int) -> tuple[Any, Any]:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig

    config = WavLMConfig(
        hidden_size=dim,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        # three convs, 80 samples per frame (WavLM-Large: seven, 320): short clips still give many frames
        conv_dim=(dim, dim, dim),
        conv_kernel=(10, 4, 4),
        conv_stride=(5, 4, 4),
        feat_extract_norm="layer",  # as WavLM-Large: it takes an attention mask
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=100,
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False, return_attention_mask=True
    )
    return config, extractor


def beit(num_layers: int, dim: int) -> tuple[Any, Any]:
    from transformers import BeitConfig
    from transformers.models.beit.image_processing_pil_beit import BeitImageProcessorPil

    config = BeitConfig(
        image_size=32,
        patch_size=8,
        hidden_size=dim,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        use_relative_position_bias=True,  # as BEiT-Large
        use_mean_pooling=True,
    )
    size = {"height": 32, "width": 32}
    processor = BeitImageProcessorPil(size=size, crop_size=size, do_center_crop=False)
    return config, processor


def byte_tokenizer() -> Any:
    """A byte-level BPE with no merges (every UTF-8 byte is a token), BOS first as Llama's, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def llama(num_layers: int, dim: int) -> tuple[Any, Any]:
    from transformers import LlamaConfig

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=dim,
        intermediate_size=2 * dim,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,  # as Llama-2: the wrapper must set one
    )
    return config, tokenizer


ARCHS = {"wavlm": wavlm, "beit": beit, "llama": llama}


def build(cfg: DictConfig) -> HFEncoder:
    from transformers import AutoModel

    arch = cfg.arch
    if arch not in ARCHS:
        raise DaamlabError(f"encoder.arch={arch!r} is not one of {', '.join(ARCHS)}")
    if not 2 <= cfg.num_layers <= 4 or cfg.dim % 4:
        raise DaamlabError(
            "tiny encoders take encoder.num_layers=2..4 and encoder.dim a multiple of 4, "
            f"got {cfg.num_layers} and {cfg.dim}"
        )
    config, processor = ARCHS[arch](cfg.num_layers, cfg.dim)
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(cfg.seed)
        model = AutoModel.from_config(config)
    identity = {
        "type": "tiny",
        "arch": arch,
        "seed": cfg.seed,
        "class": type(model).__name__,
        "weights_xxh3": weights_checksum(model),
    }
    return from_config(model, processor, KIND[arch], cfg, identity)
