"""Feature-extraction throughput, measured side by side in one process on the same encoder and items.

- pipeline: daamlab's build_cache end to end (items -> length-bucketed batches -> masked pooling ->
  float16 parts -> merged, checksummed cache on disk), the encoder loaded and the items in memory;
- naive: how the published code extracted: one item at a time, fp32, every waveform padded to the
  protocol's maximum (5 s), here with the attention mask and masked mean so the outputs are equal;
- raw: the model's own batched forward on the pipeline's batches, preprocessed beforehand: no
  feature extractor, pooling, copies or disk. pipeline / raw shows the pipeline's overhead.

The encoder is a WavLM from the real config class with random weights (no download): `--model
tiny` (the tests' 4 x 32), `base` (12 x 768, WavLM-Base shape) or `large` (24 x 1024, WavLM-Large
shape). Items are synthetic 16 kHz clips of uniform length in [--min-seconds, --max-seconds].

    python benchmarks/extract.py --model base --items 48              # CPU, fp32: equal outputs
    python benchmarks/extract.py --model base --items 48 --dtype bf16 # CPU with AVX512-BF16 or AMX
    python benchmarks/extract.py --model large --items 512 --dtype bf16  # GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from daamlab.encoders import build_encoder
from daamlab.encoders.hf import HFEncoder, resolve_device
from daamlab.features import extract as extract_module
from daamlab.features.extract import build_cache, input_length, locate
from daamlab.features.store import read_cache
from daamlab.sources import build_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
LARGE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    do_stable_layer_norm=True,
    feat_extract_norm="layer",
)


class InMemory:
    """A source's items, generated once and replayed: the pipeline does not pay for synthesising them."""

    def __init__(self, source) -> None:
        self.name, self.kind, self.version = source.name, source.kind, source.version
        self.class_names, self.skipped = source.class_names, []
        self.items_by_split = {split: list(source.items(split)) for split in source.splits()}

    def splits(self) -> list[str]:
        return list(self.items_by_split)

    def items(self, split: str):
        return iter(self.items_by_split[split])

    def num_items(self, split: str) -> int:
        return len(self.items_by_split[split])


def random_wavlm(model: str, dtype: str, device: str, batch_size: int) -> HFEncoder:
    from transformers import AutoModel, Wav2Vec2FeatureExtractor, WavLMConfig

    config = WavLMConfig(**(LARGE if model == "large" else {"feat_extract_norm": "layer"}))
    torch.manual_seed(0)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=False,
        return_attention_mask=True,
    )
    return HFEncoder(
        AutoModel.from_config(config),
        extractor,
        kind="audio",
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        identity={"type": "benchmark", "model": f"random wavlm-{model}"},
    )


def naive(encoder: HFEncoder, waves: list[np.ndarray], max_samples: int) -> np.ndarray:
    """One item per forward, padded to max_samples, fp32; masked mean (so the outputs equal the pipeline's)."""
    model, out = encoder.model, []
    for wave in waves:
        padded = np.zeros(max_samples, dtype=np.float32)
        padded[: len(wave)] = wave[:max_samples]
        mask = torch.zeros(1, max_samples, dtype=torch.long)
        mask[0, : len(wave)] = 1
        with torch.inference_mode():
            hidden = model(
                input_values=torch.from_numpy(padded)[None].to(encoder.device),
                attention_mask=mask.to(encoder.device),
                output_hidden_states=True,
            ).hidden_states
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(len(wave))))
        out.append(torch.stack([h[0, :frames].float().mean(0) for h in hidden[1:]]).cpu().numpy())
    return np.stack(out)


def raw_batches(encoder: HFEncoder, waves: list[np.ndarray], part_size: int) -> list[dict[str, torch.Tensor]]:
    """The pipeline's batches (length-sorted within parts), preprocessed and on the device."""
    batches = []
    for start in range(0, len(waves), part_size):
        part = waves[start : start + part_size]
        order = sorted(range(len(part)), key=lambda i: -input_length(part[i]))
        for b in range(0, len(order), encoder.batch_size):
            kwargs, _ = encoder._audio([part[i] for i in order[b : b + encoder.batch_size]])
            batches.append(kwargs)
    return batches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "base", "large"], default="base")
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="pipeline batch (default: 1 on a CPU, 8 on a GPU)"
    )
    parser.add_argument("--part-size", type=int, default=256)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.batch_size is None:  # a CPU forward gains nothing from batching; padding only costs it
        args.batch_size = 1 if resolve_device(args.device) == "cpu" else 8
    if args.threads:
        torch.set_num_threads(args.threads)

    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")),
    ):
        cfg = compose(
            "extract",
            overrides=[
                "data=synthetic",
                "data.kind=audio",
                f"data.num_train={args.items}",
                "data.num_test=0",
                f"data.lengths.audio=[{args.min_seconds},{args.max_seconds}]",
                f"cache.part_size={args.part_size}",
                f"paths.cache_dir={tmp}",
                "encoder=tiny_wavlm",
                f"encoder.dtype={args.dtype}",
                f"encoder.device={args.device}",
                f"encoder.batch_size={args.batch_size}",
            ],
        )
        if args.model == "tiny":
            encoder = build_encoder(cfg.encoder)
        else:
            encoder = random_wavlm(args.model, args.dtype, args.device, args.batch_size)
        reference = encoder if args.dtype == "fp32" else random_wavlm(args.model, "fp32", args.device, 1)
        # All three paths get the same items, already in memory, and the same loaded encoder: what
        # differs is batching, padding, pooling and the cache's disk work, not loading or synthesis.
        source = InMemory(build_source(cfg.data))
        extract_module.build_encoder = lambda _: encoder
        extract_module.build_source = lambda _: source
        waves = [item.input for item in source.items("train")]
        max_samples = int(args.max_seconds * SAMPLE_RATE)
        device = encoder.device
        print(
            f"WavLM-{args.model} (random) {encoder.num_layers} x {encoder.dim}, {len(waves)} items of "
            f"{args.min_seconds}-{args.max_seconds} s, {device}, pipeline {args.dtype} batch {args.batch_size}, "
            f"torch threads {torch.get_num_threads()}"
        )

        # warm-up: one batch through every path (kernels, allocator, lazy imports)
        encoder.encode(waves[: args.batch_size])
        naive(reference, waves[:1], max_samples)

        batches = raw_batches(encoder, waves, args.part_size)
        times: dict[str, list[float]] = {"pipeline": [], "naive": [], "raw": []}
        for repeat in range(args.repeats):  # interleaved rounds, best of each: robust to a busy machine
            cfg.paths.cache_dir = f"{tmp}/{repeat}"
            sync(device)
            started = time.perf_counter()
            directory = build_cache(cfg)
            sync(device)
            times["pipeline"].append(time.perf_counter() - started)

            started = time.perf_counter()
            naive_features = naive(reference, waves, max_samples)
            sync(device)
            times["naive"].append(time.perf_counter() - started)

            started = time.perf_counter()
            with torch.inference_mode():
                for kwargs in batches:
                    encoder.model(**kwargs, output_hidden_states=True)
            sync(device)
            times["raw"].append(time.perf_counter() - started)
        pipeline_s, naive_s, raw_s = (min(times[k]) for k in ("pipeline", "naive", "raw"))

        _, key, fp = locate(cfg, source)
        cached = read_cache(directory, key, fp, verify="full", name="synthetic").splits["train"].features
        diff = np.abs(cached.astype(np.float32) - naive_features)
        scale = np.abs(naive_features).max()

    n = len(waves)
    print(f"best of {args.repeats} interleaved rounds")
    print(f"pipeline  {n / pipeline_s:8.2f} items/s  ({pipeline_s:.2f} s, cache written and verified)")
    print(
        f"naive     {n / naive_s:8.2f} items/s  ({naive_s:.2f} s, 1 item per forward, padded to {args.max_seconds} s)"
    )
    print(f"raw       {n / raw_s:8.2f} items/s  ({raw_s:.2f} s, model forward only)")
    print(
        f"pipeline / naive = {naive_s / pipeline_s:.2f}x;  pipeline / raw = {raw_s / pipeline_s:.2f} (overhead {pipeline_s / raw_s - 1:+.0%})"
    )
    print(
        f"outputs: max |pipeline - naive| = {diff.max():.2e} (feature scale {scale:.2f}; the cache stores float16)"
    )


if __name__ == "__main__":
    main()
