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
    Rule("cache.part_size", whole(1), "a whole number >= 1", "cache.part_size=256"),
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


def validate(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "data") is None:
        raise DaamlabError(
            "no data chosen: give modality=<name> or data=<name> (see configs/modality/, configs/data/)"
        )
    for rule in RULES:
        rule.check(cfg)
    check_accelerator(cfg)
