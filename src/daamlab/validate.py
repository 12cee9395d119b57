"""Every value a user sets, checked before any work starts: one place, one line per problem that
names the key, the value and a valid example (the entry points print it and exit 2)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(cfg: DictConfig) -> None:
    lr = OmegaConf.select(cfg, "optim.lr")
    if not _number(lr) or not lr > 0:
        raise DaamlabError(f"optim.lr must be a number > 0, got {lr!r}; e.g. optim.lr=1e-4")
    bs = OmegaConf.select(cfg, "data.batch_size")
    if not _whole(bs) or bs < 1:
        raise DaamlabError(
            f"data.batch_size must be a whole number >= 1, got {bs!r}; e.g. data.batch_size=32"
        )
