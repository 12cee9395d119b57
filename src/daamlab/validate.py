"""Every value a user sets, checked before any work starts: one table of rules, one line per problem
that names the key, the value and a valid example (the entry points print it and exit 2).

A rule applies where its key exists in the composed config (a data source without chunking has no
`data.chunk_seconds`); the sources, encoders and modules still check what only they can know (a
layer count, a file). Values are read resolved, so `${...}` interpolations are checked as they end up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from daamlab.errors import DaamlabError

_MISSING = object()


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    key: str
    ok: Callable[[Any], bool]
    want: str  # what a valid value is, in words
    example: str
    optional: bool = False  # null is allowed

    def check(self, cfg: DictConfig) -> None:
        value = OmegaConf.select(cfg, self.key, default=_MISSING)
        if value is _MISSING or (value is None and self.optional):
            return
        if isinstance(value, ListConfig | DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if not self.ok(value):
            raise DaamlabError(
                f"{self.key}={value!r} is not valid: it must be {self.want}; e.g. {self.example}"
            )


def whole(lo: int = 0) -> Callable[[Any], bool]:
    return lambda v: _whole(v) and v >= lo


def number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
    def ok(v: Any) -> bool:
        return _number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return ok


def layer_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_whole(k) and k >= 0 for k in v) and len(set(v)) == len(v)


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda v: any(type(v) is type(a) and v == a for a in allowed)


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def text(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


TAG_CHARS = 64  # W&B refuses a tag that is empty or longer


def tag_list(v: Any) -> bool:
    tag = lambda t: (
        isinstance(t, str | int | float) and not isinstance(t, bool) and 1 <= len(str(t)) <= TAG_CHARS
    )
    return tag(v) or (isinstance(v, list) and all(tag(t) for t in v))


def span(lo: float, hi: float) -> Callable[[Any], bool]:
    """[min, max] with lo <= min <= max <= hi."""
    return lambda v: (
        isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v) and lo <= v[0] <= v[1] <= hi
    )


def map_shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_whole(x) and x >= 1 for x in v)


def devices(v: Any) -> bool:  # Lightning's: a count >= 1, "auto", or a list of device indices
    return (
        (_whole(v) and v >= 1)
        or v == "auto"
        or (isinstance(v, list) and bool(v) and all(_whole(x) and x >= 0 for x in v))
    )


# Lightning's accepted precisions (lightning.fabric.connector._PRECISION_INPUT)
PRECISIONS = (
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
)


def chunk(v: Any) -> bool:  # 0 keeps utterances whole; otherwise at least 0.1 s (a frame of every encoder)
    return _number(v) and (v == 0 or v >= 0.1)


RULES = (
    Rule("seed", whole(0), "a whole number >= 0", "seed=1"),
    Rule("optim.lr", number(0, lo_open=True), "a finite number > 0", "optim.lr=1e-4"),
    Rule("optim.weight_decay", number(0), "a finite number >= 0", "optim.weight_decay=0.01"),
    Rule(
        "optim.plateau_factor",
        number(0, 1, lo_open=True, hi_open=True),
        "a number in (0, 1)",
        "optim.plateau_factor=0.1",
    ),
    Rule("optim.plateau_patience", whole(0), "a whole number >= 0", "optim.plateau_patience=10"),
    Rule("trainer.max_epochs", whole(1), "a whole number >= 1", "trainer.max_epochs=35"),
    Rule("data.batch_size", whole(1), "a whole number >= 1", "data.batch_size=32"),
    Rule(
        "data.eval_batch_size",
        whole(1),
        "a whole number >= 1, or null",
        "data.eval_batch_size=256",
        optional=True,
    ),
    Rule("data.num_workers", whole(0), "a whole number >= 0", "data.num_workers=0"),
    Rule(
        "data.fold",
        whole(1),
        "a fold number >= 1, or null for the source's own splits",
        "data.fold=1",
        optional=True,
    ),
    Rule("data.dev_fraction", number(0, 1, hi_open=True), "a number in [0, 1)", "data.dev_fraction=0.2"),
    Rule("data.split_seed", whole(0), "a whole number >= 0", "data.split_seed=0"),
    Rule(
        "data.layers",
        layer_list,
        "a list of distinct layer indices >= 0, or null for all",
        "data.layers=[0,5,11]",
        optional=True,
    ),
    Rule(
        "data.chunk_seconds",
        chunk,
        "0 (whole utterances) or a number of seconds >= 0.1",
        "data.chunk_seconds=5.0",
    ),
    Rule(
        "attention.xi_init",
        number(0, lo_open=True),
        "a number > 0 (DAAM's scaled variance)",
        "attention.xi_init=2.0",
    ),
    Rule("attention.delta_init", number(), "a finite number", "attention.delta_init=0.0"),
    Rule("attention.dropout", number(0, 1, hi_open=True), "a number in [0, 1)", "attention.dropout=0.1"),
    Rule("data.num_train", whole(1), "a whole number of training items >= 1", "data.num_train=2000"),
    Rule("data.num_test", whole(1), "a whole number of test items >= 1", "data.num_test=500"),
    Rule("data.num_classes", whole(2), "a whole number of classes >= 2", "data.num_classes=4"),
    Rule("data.num_groups", whole(1), "a whole number >= 1", "data.num_groups=5"),
    Rule("data.num_layers", whole(1), "a whole number >= 1", "data.num_layers=24"),
    Rule("data.dim", whole(1), "a whole number >= 1", "data.dim=64"),
    Rule("data.seed", whole(0), "a whole number >= 0", "data.seed=0"),
    Rule("data.signal_strength", number(), "a finite number", "data.signal_strength=0.5"),
    Rule("data.distractor_std", number(0), "a finite number >= 0", "data.distractor_std=3.0"),
    Rule(
        "data.kind",
        one_of("audio", "image", "text"),
        "audio, image or text (null: the data decides)",
        "data.kind=audio",
        optional=True,
    ),
    Rule("data.num_broken", whole(0), "a whole number >= 0", "data.num_broken=0"),
    Rule("data.delay_s", number(0), "a finite number of seconds >= 0", "data.delay_s=0.0"),
    Rule(
        "data.root",
        text,
        "a folder path, or null for the source's default",
        "data.root=/data/iemocap",
        optional=True,
    ),
    Rule(
        "attention.num_heads",
        lambda v: v == "auto" or whole(1)(v),
        "a whole number >= 1, or auto (the most heads <= 8 dividing the layers)",
        "attention.num_heads=8",
    ),
    Rule("attention.fused", boolean, "true or false", "attention.fused=true"),
    Rule("attention.learn_density", boolean, "true or false", "attention.learn_density=true"),
    Rule("decoder.channels", whole(1), "a whole number >= 1", "decoder.channels=512"),
    Rule("decoder.channels_last", boolean, "true or false", "decoder.channels_last=true"),
    Rule(
        "decoder.map_shape",
        map_shape,
        "[height, width] of whole numbers >= 1, or null",
        "decoder.map_shape=[32,32]",
        optional=True,
    ),
    Rule("loss.gamma", number(0), "a finite number >= 0", "loss.gamma=2.5"),
    Rule("loss.alpha", number(0, 1), "a number in [0, 1]", "loss.alpha=0.25"),
    Rule("augment.snr_db", span(-100, 200), "[min, max] dB with min <= max", "augment.snr_db=[10,30]"),
    Rule(
        "augment.scale",
        span(1e-6, 1),
        "[min, max] shares of the area in (0, 1] with min <= max",
        "augment.scale=[0.5,1.0]",
    ),
    Rule("augment.flip_p", number(0, 1), "a probability in [0, 1]", "augment.flip_p=0.5"),
    Rule("encoder.batch_size", whole(1), "a whole number >= 1", "encoder.batch_size=8"),
    Rule("encoder.dtype", one_of("fp32", "bf16", "fp16"), "fp32, bf16 or fp16", "encoder.dtype=fp32"),
    Rule("cache.part_size", whole(1), "a whole number >= 1", "cache.part_size=256"),
    Rule("cache.enabled", boolean, "true or false", "cache.enabled=true"),
    Rule("cache.round_fp16", boolean, "true or false", "cache.round_fp16=false"),
    Rule("cache.verify", one_of("full", "quick"), "full or quick", "cache.verify=full"),
    Rule("cache.num_shards", whole(1), "a whole number >= 1", "cache.num_shards=4"),
    Rule("cache.shard", whole(0), "a whole number >= 0 (below cache.num_shards)", "cache.shard=0"),
    Rule(
        "trainer.accelerator",
        one_of("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
        "auto, cpu or gpu",
        "trainer=cpu",
    ),
    Rule(
        "trainer.devices",
        devices,
        "a device count >= 1, auto, or a list of device indices",
        "trainer.devices=1",
    ),
    Rule(
        "trainer.precision",
        one_of(*PRECISIONS),
        f"one of Lightning's precisions {PRECISIONS}",
        "trainer.precision=32-true",
    ),
    Rule("trainer.log_every_n_steps", whole(1), "a whole number >= 1", "trainer.log_every_n_steps=10"),
    Rule("trainer.deterministic", boolean, "true or false", "trainer.deterministic=true"),
    Rule("test", boolean, "true or false", "test=true"),
    Rule("compile", boolean, "true or false", "compile=false"),
    Rule("layer_importance", boolean, "true or false", "layer_importance=true"),
    Rule("ig_steps", whole(0), "a whole number of steps >= 0 (0: no integrated gradients)", "ig_steps=32"),
    Rule("print_config", one_of("short", "full"), "short or full", "print_config=full"),
    Rule("ckpt_path", text, "last, a checkpoint path, or null", "ckpt_path=last", optional=True),
    Rule("sweep_name", text, "a folder name", "sweep_name=my_sweep"),
    Rule(
        "tags",
        tag_list,
        f"a list of tags of 1-{TAG_CHARS} characters, or one tag",
        "tags=[ablation,v2]",
        optional=True,
    ),
    Rule(
        "experiment_tags",
        tag_list,
        f"a list of tags of 1-{TAG_CHARS} characters",
        "experiment_tags=[table:2a]",
        optional=True,
    ),
    Rule(
        "torch_threads",
        whole(1),
        "a whole number >= 1, or null for every core",
        "torch_threads=1",
        optional=True,
    ),
)


def check_accelerator(cfg: DictConfig) -> None:
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DaamlabError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; use trainer=cpu (or trainer=default)"
        )


def validate(cfg: DictConfig, needs_data: bool = True) -> None:
    """Every rule whose key the config has; eval.py's config (trainer, paths, ckpt_path) needs no data."""
    if needs_data and OmegaConf.select(cfg, "data") is None:
        raise DaamlabError(
            "no data chosen: give modality=<name> or data=<name> (see configs/modality/, configs/data/)"
        )
    for rule in RULES:
        rule.check(cfg)
    check_accelerator(cfg)
