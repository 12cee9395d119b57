"""Read run directories (metrics.json + config.yaml) into Run records, and find sweep jobs that never ran.

A run directory is any folder holding `metrics.json` or the `config.yaml` that training writes first
(so a run killed before it finished is still found, as incomplete). Nothing is read from W&B.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.record import RunRecord, config_tags
from daamlab.report.protocol import deviations
from daamlab.rundir import CONFIG, METRICS
from daamlab.tracking import ablation_pick, variant

SKIP_DIRS = {".hydra", "checkpoints", "csv", "wandb", "report"}


@dataclass
class Run:
    path: Path
    status: str  # complete | failed | incomplete (no metrics.json: killed, or still running)
    variant: str
    experiment: str | None = None  # from the `experiment:<name>` tag of the paper experiments
    data: str | None = None
    fold: int | None = None
    seed: int | None = None
    pick: str | None = None  # the IF ablation's high | low
    layers: list[int] | None = None
    best_val_acc: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    off_protocol: list[str] = field(default_factory=list)  # protocol keys changed (report/protocol.py)
    search: str | None = None  # trial | tuned (hparams_search=optuna), None for a plain run
    trial: int | None = None  # the trial's number (a tuned run: the best trial's)
    group: str | None = None  # the sweep (sweep_name): the W&B group

    @property
    def gates(self) -> Path | None:
        path = self.path / "gates.npy"
        return path if path.is_file() else None


def _tag(tags: list[str], key: str) -> str | None:
    for tag in tags:
        if tag.startswith(f"{key}:"):
            return tag.split(":", 1)[1]
    return None


def read_run(path: Path) -> Run:
    record = RunRecord.read(path / METRICS) if (path / METRICS).is_file() else None
    cfg: DictConfig | None = None
    if (path / CONFIG).is_file():
        try:
            cfg = OmegaConf.load(path / CONFIG)
        except Exception as e:  # YAML errors of several kinds
            raise DaamlabError(
                f"{path / CONFIG} cannot be read as YAML ({type(e).__name__}); delete or restore it"
            ) from None
        if not isinstance(cfg, DictConfig):
            raise DaamlabError(
                f"{path / CONFIG} is a YAML {type(cfg).__name__}, not a run config; delete or restore it"
            )

    def pick(value: Any, cfg_key: str) -> Any:
        if value is not None:
            return value
        return OmegaConf.select(cfg, cfg_key) if cfg is not None else None

    if cfg is not None and "attention" in cfg:
        name = variant(cfg)
    elif record is not None and (record.variant or record.attention):
        name = record.variant or record.attention
    else:
        raise DaamlabError(f"{path}: neither metrics.json nor config.yaml names the attention variant")
    tags = record.tags if record is not None else config_tags(cfg) if cfg is not None else []
    status = record.status if record is not None else "incomplete"
    layers = OmegaConf.select(cfg, "data.layers") if cfg is not None else None
    experiment = _tag(tags, "experiment")
    search = OmegaConf.select(cfg, "search.role") if cfg is not None else None
    return Run(
        path=path,
        status=status,
        variant=name,
        experiment=experiment,
        data=pick(record.data if record else None, "data.name"),
        fold=pick(record.fold if record else None, "data.fold"),
        seed=pick(record.seed if record else None, "seed"),
        pick=ablation_pick(cfg) if cfg is not None else None,
        layers=list(layers) if layers is not None else None,
        best_val_acc=record.best_val_acc if status == "complete" else None,
        test=record.test if record else {},
        params=record.params if record else {},
        error=record.error if record else None,
        off_protocol=deviations(cfg, experiment) if cfg is not None else [],
        search=search,
        trial=OmegaConf.select(cfg, "search.trial") if cfg is not None else None,
        group=OmegaConf.select(cfg, "sweep_name") if cfg is not None else None,
    )


def _is_run_dir(path: Path) -> bool:
    # training writes config.yaml first (a killed run is found, as incomplete); eval.py's folders hold
    # eval_config.yaml, not config.yaml
    return (path / METRICS).is_file() or (path / CONFIG).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    if _is_run_dir(root):
        return [root]
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
        found.extend(find_run_dirs(child))
    return found


def expected_jobs(multirun_yaml: Path) -> list[frozenset[str]]:
    """Every job a multirun launched or meant to launch, as its set of overrides (the basic grid)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(multirun_yaml)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    choices = []
    for override in OverridesParser.create().parse_overrides(args):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([f"{key}={override.get_value_element_as_str()}"])
    return [frozenset(job) for job in itertools.product(*choices)]


def missing_jobs(root: Path, run_dirs: list[Path]) -> list[tuple[Path, str]]:
    """(sweep dir, overrides) of every job in a multirun.yaml under `root` that has no run directory."""
    missing = []
    for multirun_yaml in sorted(root.rglob("multirun.yaml")):
        sweep = multirun_yaml.parent
        launched = set()
        for run_dir in run_dirs:
            overrides = run_dir / ".hydra" / "overrides.yaml"
            if run_dir.is_relative_to(sweep) and overrides.is_file():
                launched.add(frozenset(OmegaConf.to_container(OmegaConf.load(overrides))))
        for job in expected_jobs(multirun_yaml):
            if job not in launched:
                missing.append((sweep, " ".join(sorted(job))))
    return missing


def collect(paths: list[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All runs under `paths` (run dirs, multirun dirs or any folder above them) and the sweep jobs
    that never started."""
    runs, missing = [], []
    for root in paths:
        if not root.is_dir():
            raise DaamlabError(f"{root} is not a directory; give run directories or a multirun directory")
        run_dirs = find_run_dirs(root)
        runs.extend(read_run(d) for d in run_dirs)
        missing.extend(missing_jobs(root, run_dirs))
    if not runs:
        raise DaamlabError(
            f"no run directories (metrics.json or config.yaml) under {', '.join(map(str, paths))}"
        )
    return runs, missing
