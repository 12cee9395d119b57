"""The run record: what one training run (metrics.json) or one evaluation (eval_metrics.json) found.

This module is the only place the record's keys are spelled. Training, eval.py, failure records,
the sweep table, the report, the trackers and the tests all build, write and read `RunRecord`.
A record says `complete` only if its run trained at least one epoch and every number in it is
finite (`RunRecord.check`); anything else is recorded as `failed`, with the reason.

Versions: 1 is the record before it had a schema (no `version` key; the same keys), 2 adds
`version`, 3 adds `variant` and `search_role` (None when read from an older record). A record of a later version than this code knows is refused with one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.io import write_json

VERSION = 3
STATUSES = ("complete", "failed")


class RunDiverged(DaamlabError):
    """A run that cannot be recorded as complete: no epoch trained, or non-finite numbers."""


def config_tags(cfg: DictConfig) -> list[str]:
    """The config's own tags as text, each once: the experiment's (`experiment_tags`), then the user's
    `tags`, a list (tags=[ablation,v2]) or one tag given bare (tags=ablation)."""
    out: list[str] = []
    for key in ("experiment_tags", "tags"):
        tags = OmegaConf.select(cfg, key, default=None)
        if tags is not None:
            out += [str(t) for t in tags] if isinstance(tags, ListConfig | list) else [str(tags)]
    return list(dict.fromkeys(out))


@dataclass
class RunRecord:
    status: str  # complete | failed
    # what ran: the run's identity, from its config
    modality: str | None = None
    data: str | None = None
    attention: str | None = None
    decoder: str | None = None
    fold: int | None = None
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    experiment: str | None = None  # the sweep family runs are compared in (W&B group across sweeps)
    variant: str | None = None  # what tables name it by: tracking.variant (e.g. mhsa_paper[layer=22])
    search_role: str | None = None  # trial | tuned (hparams_search=optuna); None for a plain run
    # what it found
    best_val_acc: float | None = None  # the paper's metric: best validation accuracy over the epochs
    best_epoch: int | None = None
    epochs: int | None = None  # epochs trained
    test: dict[str, float] = field(default_factory=dict)  # acc, uar, f1, loss of the best checkpoint
    params: dict[str, int] = field(default_factory=dict)  # trainable parameter counts
    splits: dict[str, Any] = field(default_factory=dict)  # rows, items, groups, classes per split
    data_info: dict[str, Any] = field(default_factory=dict)  # the cache fingerprint, skipped items, ...
    provenance: dict[str, Any] = field(default_factory=dict)  # git SHA, package versions, command
    wall_time_s: float | None = None
    error: str | None = None  # failed runs: why
    ckpt_path: str | None = None  # evaluations: the checkpoint that was scored
    version: int = VERSION

    @staticmethod
    def identity(cfg: DictConfig) -> dict[str, Any]:
        """The identity keys of a run, read from its config (usable on a config that fails to build)."""
        pick = lambda key, default=None: OmegaConf.select(cfg, key, default=default)
        return {
            "modality": pick("modality_name"),
            "data": pick("data.name"),
            "attention": pick("attention.name"),
            "decoder": pick("decoder.name"),
            "fold": pick("data.fold"),
            "seed": pick("seed"),
            "tags": config_tags(cfg),
        }

    @classmethod
    def failed(cls, cfg: DictConfig, error: BaseException | str) -> RunRecord:
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        identity = cls.identity(cfg)
        try:
            return cls(status="failed", error=error, **identity)
        except (TypeError, ValueError):  # a config too broken to name the run (e.g. seed=abc)
            return cls(status="failed", error=error)

    def check(self) -> None:
        """Refuse `complete` unless an epoch was trained and every number is finite."""
        if self.status not in STATUSES:
            raise DaamlabError(f"run record status {self.status!r} is not one of {STATUSES}")
        if self.status != "complete" or self.ckpt_path is not None:  # an evaluation trains nothing
            return
        if not self.epochs or self.epochs < 1 or self.best_epoch is None or self.best_epoch < 0:
            raise RunDiverged(
                f"no epoch was trained (epochs={self.epochs}, best epoch {self.best_epoch}): "
                "set trainer.max_epochs >= 1 and give the run training items"
            )
        numbers = {"best_val_acc": self.best_val_acc, **{f"test/{k}": v for k, v in self.test.items()}}
        bad = [k for k, v in numbers.items() if v is None or not math.isfinite(v)]
        if bad:
            raise RunDiverged(f"non-finite results ({', '.join(bad)}): the run diverged")

    # ------------------------------------------------------------------------------------- on disk

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Any, source: str = "run record") -> RunRecord:
        if not isinstance(payload, dict):
            raise DaamlabError(f"{source} is a JSON {type(payload).__name__}, not a run record (an object)")
        version = payload.get("version", 1)
        if not isinstance(version, int) or version > VERSION:
            raise DaamlabError(
                f"{source} is a run record of version {version!r}; this daamlab reads versions 1..{VERSION}: "
                "update daamlab"
            )
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in payload.items() if k in known}
        if "status" not in values:
            raise DaamlabError(f"{source} has no 'status': not a daamlab run record")
        for name, value in values.items():
            if not _fits(value, known[name].type):
                raise DaamlabError(
                    f"{source}: '{name}' is {value!r}, which is not a {known[name].type}; "
                    "the file is damaged: delete it and re-run the job"
                )
        return cls(**{**values, "version": VERSION})

    def write(self, path: Path) -> None:
        self.check()
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        try:
            payload = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DaamlabError(
                f"{path} is not valid JSON ({e}); delete it and re-run the job that wrote it"
            ) from None
        return cls.from_dict(payload, source=str(path))


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits one of the field annotations above (spelled as strings)."""
    allowed = [a.strip() for a in str(annotation).split("|")]
    for a in allowed:
        if a == "Any":
            return True
        if a == "None" and value is None:
            return True
        if a == "str" and isinstance(value, str):
            return True
        if a == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if a == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if a.startswith("dict") and isinstance(value, dict):
            return all(_fits(v, a[a.index(",") + 1 : -1]) for v in value.values()) if "," in a else True
        if a.startswith("list") and isinstance(value, list):
            return True
    return False
