"""The run directory: what a run writes where, its saved config, and the sweep-skip policy.

```
<run dir>/config.yaml         the resolved config (written first: a killed run is still found)
<run dir>/config_tree.log     the same, as the tree `print_config=full` shows
<run dir>/run_info.json       provenance, written at the start
<run dir>/metrics.json        the run record (daamlab/record.py), written last
<run dir>/checkpoints/        epoch_NNN.ckpt (the best), last.ckpt (resume)
<run dir>/predictions.csv     per test row: id, group, label, prediction, class probabilities
<run dir>/accuracy.png        accuracy per epoch (train, val/dev) and test recall per class
<run dir>/gates.npy, importance.npy, importance.png    DAAM-family heads
<run dir>/layer_importance.*  occlusion per layer (heads on cached features)
```
eval.py's directory holds `eval_metrics.json` and `predictions.csv` of the checkpoint it scored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.io import exclusive, write_json, write_text
from daamlab.record import RunRecord

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
CONFIG_TREE = "config_tree.log"
RUN_INFO = "run_info.json"
METRICS = "metrics.json"
EVAL_METRICS = "eval_metrics.json"
EVAL_CONFIG = "eval_config.yaml"
PREDICTIONS = "predictions.csv"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
JOB_FOLDER_CHARS = (
    150  # a readable prefix of the overrides; the hash keeps it unique (names stay < 255 bytes)
)

# how a run is filed, logged and launched, not what it computes: a re-run that changes only these
# (another logger, a sweep moved to another disk) is the same run
NOT_IDENTITY = ("sweep_name", "logger", "paths", "launcher", "print_config")


def job_folder(overrides: str) -> str:
    """A sweep job's folder name from its overrides (`a=1,b=x`): the overrides themselves when short
    and free of path separators (so re-running a sweep finds its jobs), else a readable prefix plus a
    hash of them all. A path-valued override (`data.root=/x/y`) never nests folders."""
    if not overrides:
        return "default"
    if len(overrides) <= JOB_FOLDER_CHARS and "/" not in overrides and not overrides.startswith("."):
        return overrides
    readable = re.sub(r"[^A-Za-z0-9=,._+-]+", "_", overrides).strip("._")[:JOB_FOLDER_CHARS]
    return f"{readable}-{hashlib.sha256(overrides.encode()).hexdigest()[:12]}"


@contextmanager
def job_lock(out_dir: Path) -> Iterator[bool]:
    """Held while a job trains in `out_dir`: a second process (another sweep of the same name) that
    finds it held skips the job and says so, instead of writing into the same folder at once."""
    with exclusive(out_dir / LOCK, wait=False) as held:
        yield held


def trained_elsewhere(out_dir: Path) -> bool:
    """Whether another process holds the job's lock now (a job left incomplete by a kill does not)."""
    if not (out_dir / LOCK).is_file():
        return False
    with exclusive(out_dir / LOCK, wait=False) as held:
        return not held


def holds_training_run(directory: Path) -> bool:
    return (directory / METRICS).is_file() or (directory / RUN_INFO).is_file()


def save_config(cfg: DictConfig, out_dir: Path, name: str = CONFIG) -> None:
    """The resolved config (and its tree) in the run directory; printed short, or in full with print_config=full."""
    from hydra.core.hydra_config import HydraConfig

    tree = config_tree(cfg)
    write_text(out_dir / name, OmegaConf.to_yaml(cfg, resolve=True))
    if HydraConfig.initialized() and name == CONFIG:
        # Hydra's own .hydra/ folder is off (configs/hydra/default.yaml: nothing is written before the
        # checks pass); the report finds a sweep's jobs by these overrides
        overrides = list(HydraConfig.get().overrides.task)
        write_text(out_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
    if name == CONFIG:
        write_text(out_dir / CONFIG_TREE, _render(tree, width=120))
    if cfg.get("print_config", "short") == "full":
        print(_render(tree))
    else:
        print(config_summary(cfg, out_dir))


def save_run_info(out_dir: Path, info: dict[str, Any]) -> None:
    write_json(out_dir / RUN_INFO, info)


def config_summary(cfg: DictConfig, out_dir: Path) -> str:
    """Two lines: the config groups chosen and the command-line overrides (the full tree is in config.yaml)."""
    from hydra.core.hydra_config import HydraConfig

    lines = []
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        choices = {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra") and v}
        lines.append("config: " + " ".join(f"{k}={v}" for k, v in sorted(choices.items())))
        lines.append("overrides: " + (" ".join(hydra.overrides.task) or "(none)"))
    lines.append(f"run directory: {out_dir} (full config: {CONFIG}; print_config=full to show it)")
    return "\n".join(lines)


def config_tree(cfg: DictConfig):
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    return tree


def _render(tree, width: int | None = None) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO())
    console.print(tree)
    return console.file.getvalue()


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus NOT_IDENTITY, with this run's own directories spelled `<run dir>`,
    `<log dir>` (checkpoint paths follow the run directory, which is not what the run computes)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    folders = [
        (OmegaConf.select(cfg, k), f"<{k.split('.')[-1]}>") for k in ("paths.output_dir", "paths.log_dir")
    ]
    folders = [(str(f), name) for f, name in folders if f]

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):
            for folder, name in folders:
                value = value.replace(folder, name)
        return value

    return strip({k: v for k, v in plain.items() if k not in NOT_IDENTITY})


def finished_record(cfg: DictConfig, out_dir: Path) -> RunRecord | None:
    """A sweep job's record if its run already completed with this same config, else None.

    Re-running a named sweep lands every job in the folder it had before: a complete one is skipped,
    an incomplete one (failed, killed) is trained again (resumed from checkpoints/last.ckpt under
    ckpt_path=last). A complete run whose saved config differs is an error, not a silent reuse.
    """
    path = out_dir / METRICS
    if not path.is_file():
        return None
    record = RunRecord.read(path)
    if record.status != "complete":
        return None
    saved_path = out_dir / CONFIG
    if not saved_path.is_file():
        changed = [f"{CONFIG} missing"]
    else:
        try:
            saved = identity(OmegaConf.load(saved_path))
        except Exception as e:  # a damaged config.yaml: YAML errors of several kinds
            raise DaamlabError(
                f"{saved_path} cannot be read ({type(e).__name__}); delete {out_dir} to re-run"
            ) from None
        now = identity(cfg)
        changed = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
    if changed:
        raise DaamlabError(
            f"{out_dir} holds a finished run whose config differs ({', '.join(changed)}); "
            "name a new sweep (sweep_name=...) instead of reusing this one"
        )
    return record
