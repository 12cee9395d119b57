"""encoder.type=hf: any transformers AutoModel (hub id or local `encoder.path`), frozen, layer-wise pooled.

Preprocessing by the source's kind:
- audio: the model's feature extractor on raw 16 kHz waveforms, padded per batch with a sample mask;
  the frame mask comes from the model's conv feature-extractor lengths (wav2vec2 family: WavLM, HuBERT),
- image: the model's image processor (resized to the model's input size: no padding); images of any
  size mix in a batch; `resize: center_crop` first crops each to its centred square of 0.875 of the
  shorter side (the ImageNet evaluation crop) instead of letting the processor stretch it,
- text: the model's tokenizer, right-padded (causal models must not see pads before real tokens),
  with `pad_token` set when the model has none (Llama).
Every transformer layer's hidden states (embeddings excluded, as the paper) are mean-pooled over
the valid frames/tokens only, so padding never changes an item's features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from daamlab.errors import DaamlabError

KINDS = ("audio", "image", "text")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAMPLE_RATE = 16000

MaskFn = Callable[[int], torch.Tensor]  # frames T -> (B, T) bool: which frames/tokens are real


class HFEncoder:
    """A frozen transformers model + its preprocessor -> (B, N, d) pooled layer features (a LayerEncoder)."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        kind: str,
        dtype: str = "fp32",
        device: str = "auto",
        layers: list[int] | None = None,
        batch_size: int = 8,
        normalize_audio: bool = False,
        max_length: int | None = None,
        resize: str = "squash",
        identity: dict[str, Any],
    ) -> None:
        if resize not in ("squash", "center_crop"):
            raise DaamlabError(f"encoder.resize={resize!r} must be squash or center_crop")
        self.resize = resize
        if kind not in KINDS:
            raise DaamlabError(f"encoder.kind={kind!r} is not one of {', '.join(KINDS)}")
        if dtype not in DTYPES:
            raise DaamlabError(f"encoder.dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        self.kind, self.dtype_name, self.batch_size = kind, dtype, int(batch_size)
        self.dtype = DTYPES[dtype]
        kept_fp32 = grouped_conv1d_kept_fp32(model) if self.dtype == torch.bfloat16 else {}
        self.model = model.to(torch.device(resolve_device(device)), self.dtype).eval().requires_grad_(False)
        for conv, state in kept_fp32.items():
            run_in_fp32(conv, state, self.dtype)
        self.processor = processor
        self.identity = identity
        config = model.config
        total = config.num_hidden_layers
        self.layers = select_layers(layers, total)
        self.num_layers, self.dim = len(self.layers), int(config.hidden_size)
        self.max_length = max_length
        self.preprocessing: dict[str, Any] = {"kind": kind, "pooling": "masked_mean"}
        if kept_fp32:  # features differ from (wrong) caches made before this fix: another fingerprint
            self.preprocessing |= {"grouped_conv1d": "fp32"}
        if kind == "audio":
            if not hasattr(model, "_get_feat_extract_output_lengths"):
                raise DaamlabError(
                    f"audio model {type(model).__name__} has no conv feature-extractor lengths "
                    "(_get_feat_extract_output_lengths), so its frame mask cannot be derived; "
                    "use a wav2vec2-family model (WavLM, HuBERT, wav2vec 2.0) or a packaged demo encoder"
                )
            processor.do_normalize = bool(normalize_audio)
            # Models with group-norm conv stacks (wav2vec2-base) are trained without an attention mask
            # and expect zero padding; the feature extractor says which kind this is.
            self.model_takes_mask = bool(processor.return_attention_mask)
            self.preprocessing |= {"normalize": bool(normalize_audio), "sample_rate": SAMPLE_RATE}
        elif kind == "text":
            if processor.pad_token is None:  # Llama has none; any id works, the mask hides it
                processor.pad_token = processor.eos_token or processor.unk_token
            processor.padding_side = "right"
            self.preprocessing |= {"max_length": max_length}
        else:
            self.preprocessing |= {"processor": processor.to_dict()}
            if resize == "center_crop":  # only then: the default's fingerprint (and caches) stay as they were
                self.preprocessing |= {"resize": f"centre square of {CROP_FRACTION} of the shorter side"}

    @property
    def device(self) -> torch.device:
        """Where the model is: it may be moved after construction (the uncached and LoRA modes follow the trainer)."""
        return next(self.model.parameters()).device

    def fingerprint(self) -> dict[str, Any]:
        return {
            **self.identity,
            "dtype": self.dtype_name,
            "layers": self.layers,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "preprocessing": self.preprocessing,
        }

    def encode(self, inputs: list[Any]) -> torch.Tensor:
        """Raw inputs of one batch -> (B, N, d) float32 on the CPU."""
        with torch.inference_mode():
            return self.pooled(inputs).cpu()

    def pooled(self, inputs: list[Any]) -> torch.Tensor:
        """Raw inputs -> (B, N, d) float32 on the model's device, differentiable where the model has
        trainable weights (LoRA adapters); `encode` is this under inference mode."""
        kwargs, valid = getattr(self, f"_{self.kind}")(inputs)
        hidden = self.model(**kwargs, output_hidden_states=True).hidden_states  # N_all+1 x (B, T, d)
        mask = valid(hidden[1].shape[1]).to(self.device, torch.float32)  # (B, T)
        count = mask.sum(1).clamp_min(1.0)[:, None, None]  # (B, 1, 1)
        # (B, 1, T) @ (B, T, d) -> (B, 1, d) per layer; hidden[0] is the embedding output
        pooled = torch.cat([torch.bmm(mask[:, None, :], hidden[i + 1].float()) for i in self.layers], 1)
        return pooled / count  # (B, N, d)

    def _audio(self, waves: list[np.ndarray]) -> tuple[dict[str, torch.Tensor], MaskFn]:
        batch = self.processor(
            [np.asarray(w, dtype=np.float32) for w in waves],
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        samples = batch.pop("attention_mask")  # (B, S) 1 where the waveform is real
        frames = self.model._get_feat_extract_output_lengths(samples.sum(-1))  # (B,) valid frames
        kwargs = {k: v.to(self.device, self.dtype) for k, v in batch.items()}
        if self.model_takes_mask and not bool(samples.all()):  # an all-ones mask changes nothing, costs ~6%
            kwargs["attention_mask"] = samples.to(self.device)
        return kwargs, lambda T: torch.arange(T)[None, :] < frames[:, None]

    def _text(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], MaskFn]:
        batch = self.processor(
            list(texts),
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        tokens = batch["attention_mask"]  # (B, T)
        return {k: v.to(self.device) for k, v in batch.items()}, lambda T: tokens.bool()

    def _image(self, images: list[Any]) -> tuple[dict[str, torch.Tensor], MaskFn]:
        images = [im.convert("RGB") for im in images]
        if self.resize == "center_crop":
            images = [center_square(im) for im in images]
        batch = self.processor(images=images, return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, self.dtype)
        return {"pixel_values": pixels}, lambda T: torch.ones(len(images), T, dtype=torch.bool)


def grouped_conv1d_kept_fp32(model: torch.nn.Module) -> dict[torch.nn.Module, dict[str, torch.Tensor]]:
    """The grouped Conv1d modules of a model about to run in bf16, with their fp32 weights.

    torch's CPU bf16 grouped conv1d (oneDNN; torch 2.13) returns wrong values: relative error ~1,
    where groups=1 and Conv2d are right to bf16 precision. WavLM/HuBERT/wav2vec2's positional conv
    (groups=16) then corrupts every layer's features. These convs stay fp32 (run_in_fp32)."""
    return {
        m: {k: v.detach().clone() for k, v in m.state_dict().items()}
        for m in model.modules()
        if isinstance(m, torch.nn.Conv1d) and m.groups > 1
    }


def run_in_fp32(conv: torch.nn.Module, state: dict[str, torch.Tensor], out_dtype: torch.dtype) -> None:
    """The conv back in fp32 with its original weights: fed fp32, handing back `out_dtype`."""
    conv.float().load_state_dict(state)
    conv.register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))
    conv.register_forward_hook(lambda module, args, out: out.to(out_dtype))


CROP_FRACTION = 0.875  # ImageNet evaluation: the centre 224 of 256


def center_square(image: Any) -> Any:
    """The centred square of CROP_FRACTION of the shorter side (a PIL image); the processor resizes it."""
    width, height = image.size
    side = max(1, round(CROP_FRACTION * min(width, height)))
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DaamlabError(
            f"encoder.device={device} but no CUDA device is available; use encoder.device=auto or cpu"
        )
    return device


def select_layers(layers: list[int] | None, total: int) -> list[int]:
    """Indices into the model's transformer layers (0 = the first block); null keeps all of them."""
    if layers is None:
        return list(range(total))
    chosen = [int(i) + total if int(i) < 0 else int(i) for i in layers]
    if not chosen or any(not 0 <= i < total for i in chosen) or len(set(chosen)) != len(chosen):
        raise DaamlabError(
            f"encoder.layers={list(layers)} must be distinct indices in 0..{total - 1} "
            "(negative counts from the end) or null for every layer"
        )
    return chosen


def weights_checksum(model: torch.nn.Module) -> str:
    """xxh3 of every parameter and buffer, in state_dict order: which weights made the features."""
    import xxhash

    h = xxhash.xxh3_64()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def unavailable(model: str, why: str) -> DaamlabError:
    local = f"/path/to/{model.split('/')[-1]}"
    return DaamlabError(
        f"encoder model '{model}' is not available: {why}. Download it once where the hub is reachable "
        f"(hf download {model} --local-dir {local}), then set encoder.path={local}"
    )


def hub_kwargs(model: str, revision: str) -> dict[str, Any]:
    """from_pretrained kwargs for a hub id, failing within seconds with one message when the weights
    cannot be had (offline, unreachable, gated, unknown), instead of transformers' retries."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig

    try:  # already in the local HF cache: no network at all
        AutoConfig.from_pretrained(model, revision=revision, local_files_only=True)
        return {"revision": revision, "local_files_only": True}
    except OSError:
        pass
    if hub_offline():
        raise unavailable(model, "HF_HUB_OFFLINE=1 is set and it is not in the local Hugging Face cache")
    try:
        HfApi().model_info(model, revision=revision, timeout=10)
    except GatedRepoError:
        raise unavailable(
            model, "it is gated: accept its licence on huggingface.co and log in (hf auth login)"
        ) from None
    except RevisionNotFoundError:
        raise unavailable(model, f"the hub has no revision '{revision}' (encoder.revision)") from None
    except RepositoryNotFoundError:
        raise unavailable(
            model, "the hub has no such model (check encoder.model), or it is private"
        ) from None
    except Exception as e:  # no network, DNS, proxy, timeout: whatever the HTTP stack raises
        raise unavailable(model, f"the hub cannot be reached ({type(e).__name__}: {e})") from None
    return {"revision": revision}


def load_processor(kind: str, source: str, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    loader = {"audio": AutoFeatureExtractor, "image": AutoImageProcessor, "text": AutoTokenizer}[kind]
    return loader.from_pretrained(source, **kwargs)


def build(cfg: DictConfig) -> HFEncoder:
    from transformers import AutoModel

    kind, model_id = cfg.get("kind"), cfg.get("model")
    if not model_id:
        raise DaamlabError(
            "encoder=hf needs the model: encoder.model=<hub id> (and encoder.path=DIR for a local copy)"
        )
    if kind not in KINDS:
        raise DaamlabError(f"encoder.kind={kind!r}: set encoder.kind=audio, image or text for '{model_id}'")
    if cfg.get("path"):
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").is_file():
            raise DaamlabError(
                f"encoder.path={path} has no config.json: point it at a saved copy of '{model_id}' "
                "(the directory `hf download --local-dir` or save_pretrained wrote)"
            )
        source, kwargs = str(path), {"local_files_only": True}
    else:
        source, kwargs = model_id, hub_kwargs(model_id, cfg.revision)
    try:
        model = AutoModel.from_pretrained(source, dtype=DTYPES.get(cfg.dtype, torch.float32), **kwargs)
        processor = load_processor(kind, source, kwargs)
    except OSError as e:  # an incomplete copy: files missing from the cache or the local directory
        raise unavailable(model_id, f"loading from {source} failed ({e})") from None
    identity = {
        "type": "hf",
        "model": model_id,
        "path": str(cfg.get("path")) if cfg.get("path") else None,
        "revision": getattr(model.config, "_commit_hash", None) or cfg.get("revision"),
        "class": type(model).__name__,
        "weights_xxh3": weights_checksum(model),
    }
    return from_config(model, processor, kind, cfg, identity)


def from_config(model, processor, kind: str, cfg: DictConfig, identity: dict[str, Any]) -> HFEncoder:
    """The wrapper around a loaded model, with the encoder config's runtime keys (hf and tiny share it)."""
    return HFEncoder(
        model,
        processor,
        kind=kind,
        dtype=cfg.dtype,
        device=cfg.device,
        layers=cfg.get("layers"),
        batch_size=cfg.batch_size,
        normalize_audio=cfg.get("normalize_audio", False),
        max_length=cfg.get("max_length"),
        resize=cfg.get("resize", "squash"),
        identity=identity,
    )
