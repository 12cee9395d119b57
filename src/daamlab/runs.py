"""Run directories: the resolved config, metrics.json (atomic), and the one-line error handling of the CLIs."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, read_write

from daamlab.errors import DaamlabError


def write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, newline="") as f:
        f.write(text)
        tmp = f.name
    os.replace(tmp, path)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def print_config(cfg: DictConfig, out_dir: Path | None) -> None:
    """Print the resolved config as a rich tree and save it (config_tree.log, config.yaml) in the run dir."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "config_tree.log", "w") as f:
            Console(file=f, width=120).print(tree)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def finished_metrics(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """A sweep job's metrics.json if its run already completed with this same config, else None.

    Re-running a named sweep lands every job in the folder it had before (configs/hydra/default.yaml):
    a complete one is skipped, an incomplete one (crashed, killed) is trained again (resumed from its
    checkpoints/last.ckpt under ckpt_path=last).
    A complete run whose saved config differs is an error, not a silent reuse of stale results.
    """
    path = out_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    if metrics.get("status") != "complete":
        return None
    saved = OmegaConf.load(out_dir / "config.yaml") if (out_dir / "config.yaml").is_file() else None
    now = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ignore = ("sweep_name", "logger")  # how a run is filed and logged, not what it computes
    changed = (
        sorted(k for k in set(now) | set(saved) if k not in ignore and now.get(k) != saved.get(k))
        if saved is not None
        else ["config.yaml missing"]
    )
    if changed:
        raise DaamlabError(
            f"{out_dir} holds a finished run whose config differs ({', '.join(changed)}); "
            "name a new sweep (sweep_name=...) instead of reusing this one"
        )
    return metrics


def record_failure(cfg: DictConfig, out_dir: Path, error: BaseException) -> None:
    """metrics.json with status 'failed' and the error, so the report lists the run as failed."""
    write_json(
        out_dir / "metrics.json",
        {
            "status": "failed",
            "error": f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
            "modality": OmegaConf.select(cfg, "modality_name"),
            "data": OmegaConf.select(cfg, "data.name"),
            "fold": OmegaConf.select(cfg, "data.fold"),
            "seed": OmegaConf.select(cfg, "seed"),
            "attention": OmegaConf.select(cfg, "attention.name"),
            "tags": list(OmegaConf.select(cfg, "tags", default=[])),
        },
    )


def _user_error(e: BaseException) -> DaamlabError | None:
    """A DaamlabError, also when a config resolver raised it (OmegaConf re-raises those as its own)."""
    while e is not None:
        if isinstance(e, DaamlabError):
            return e
        e = e.__cause__ or e.__context__
    return None


DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}


def provenance() -> dict[str, Any]:
    """What every number traces back to: the code's git commit (and whether it had local changes),
    the Python and package versions. The cache fingerprint is in metrics.json's data_info."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    packages = {}
    for name in ("daamlab", "torch", "lightning", "hydra-core", "transformers", "numpy", "torchmetrics"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "packages": packages,
        "command": " ".join(sys.argv),
    }


# what Lightning's DDP launcher sets in the launching process
DDP_ENVIRON = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def ddp_relaunches_this_job() -> Iterator[None]:
    """Inside a Hydra multirun job, make Lightning's DDP start ranks >= 1 as this one job.

    Lightning starts them by re-running sys.argv with hydra.run.dir=<Hydra's run.dir>: in a multirun
    that is the whole sweep (`-m a=1,2`) in a folder that is not this job's. For the job's length,
    argv holds the job's own overrides and run.dir its output folder. After it, both are restored, and
    so are the variables the launcher set (with LOCAL_RANK set, the next job would start no ranks);
    the job's process group is closed (Lightning keeps it; the next job's ranks are new processes).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra = HydraConfig.get()
    argv, run_dir = sys.argv, hydra.run.dir
    environ = {k: os.environ.get(k) for k in DDP_ENVIRON}
    sys.argv = [argv[0], *hydra.overrides.task]
    with read_write(hydra):
        hydra.run.dir = hydra.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hydra):
            hydra.run.dir = run_dir
        for k, v in environ.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point; bad input ends in one line on stderr and exit status 2, not a traceback.
    An open W&B run is finished whatever happens, so the next job of a multirun starts its own."""
    failed = True
    try:
        with ddp_relaunches_this_job():
            result = task(cfg)
        failed = False
        return result
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        print(
            f"daamlab: error: cannot write {e.filename or 'the run output'}: {e.strerror}; free disk space or "
            "point paths.log_dir / paths.cache_dir at a writable disk (nothing was overwritten)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except Exception as e:
        user = _user_error(e)
        if user is None:
            raise
        print(f"daamlab: error: {user}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        wandb = sys.modules.get("wandb")  # imported only by logger=wandb
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
