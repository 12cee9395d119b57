"""Read run directories (metrics.json + config.yaml) into Run records, and find sweep jobs that never ran.

A run directory is any folder holding `metrics.json` or the `config.yaml` that training writes first
(so a run killed before it finished is still found, as incomplete). Nothing is read from W&B.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.report.protocol import deviations

# the attention configs whose defaults name a variant: mhsa_paper with layer=22 is "mhsa_paper[layer=22]"
ATTENTION_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "attention"
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


def variant_label(cfg: DictConfig) -> str:
    """The attention name, plus the options that differ from its config file's defaults (those
    resolved against the run's own config, e.g. a modality's `daam_heads`)."""
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name = attention["name"]
    defaults_path = ATTENTION_CONFIGS / f"{name}.yaml"
    if not defaults_path.is_file():
        return name
    context = cfg.copy()
    context.attention = OmegaConf.load(defaults_path)
    defaults = OmegaConf.to_container(context.attention, resolve=True)
    changed = [f"{k}={_fmt(v)}" for k, v in sorted(attention.items()) if k != "name" and defaults.get(k) != v]
    return f"{name}[{','.join(changed)}]" if changed else name


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _tag(tags: list[str], key: str) -> str | None:
    for tag in tags:
        if tag.startswith(f"{key}:"):
            return tag.split(":", 1)[1]
    return None


def read_run(path: Path) -> Run:
    metrics: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text())
        except json.JSONDecodeError as e:
            raise DaamlabError(f"{path / 'metrics.json'} is not valid JSON ({e})") from None
    cfg: DictConfig | None = (
        OmegaConf.load(path / "config.yaml") if (path / "config.yaml").is_file() else None
    )

    def pick(key: str, cfg_key: str) -> Any:
        if metrics.get(key) is not None:
            return metrics[key]
        return OmegaConf.select(cfg, cfg_key) if cfg is not None else None

    if cfg is not None and "attention" in cfg:
        variant = variant_label(cfg)
    elif metrics.get("attention"):
        variant = metrics["attention"]
    else:
        raise DaamlabError(f"{path}: neither metrics.json nor config.yaml names the attention variant")
    tags = list(pick("tags", "tags") or [])
    status = metrics.get("status", "incomplete")
    layers = OmegaConf.select(cfg, "data.layers") if cfg is not None else None
    experiment = _tag(tags, "experiment")
    search = OmegaConf.select(cfg, "search.role") if cfg is not None else None
    if search:  # a trial's or a tuned run's options are the search's: named by role, not by value
        trial = OmegaConf.select(cfg, "search.trial")
        variant = (
            f"{cfg.attention.name} (tuned)" if search == "tuned" else f"{cfg.attention.name} trial {trial}"
        )
    return Run(
        path=path,
        status=status,
        variant=variant,
        experiment=experiment,
        data=pick("data", "data.name"),
        fold=pick("fold", "data.fold"),
        seed=pick("seed", "seed"),
        pick=OmegaConf.select(cfg, "ablation.pick") if cfg is not None else None,
        layers=list(layers) if layers is not None else None,
        best_val_acc=metrics.get("best_val_acc") if status == "complete" else None,
        test=metrics.get("test") or {},
        params=metrics.get("params") or {},
        error=metrics.get("error"),
        off_protocol=deviations(cfg, experiment) if cfg is not None else [],
        search=search,
        trial=OmegaConf.select(cfg, "search.trial") if cfg is not None else None,
        group=OmegaConf.select(cfg, "sweep_name") if cfg is not None else None,
    )


def _is_run_dir(path: Path) -> bool:
    if (path / "metrics.json").is_file():
        return True
    # training writes config.yaml first; eval.py's folders (eval_metrics.json) are not training runs
    return (path / "config.yaml").is_file() and not (path / "eval_metrics.json").is_file()


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
