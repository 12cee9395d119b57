"""The command-line wrapper of every entry point (train.py, eval.py, extract.py): the exit policy,
DDP relaunches inside a multirun, and what a job must give back to the process when it ends.

Exit policy: bad input (a DaamlabError, also one raised inside a config resolver) and the
expected OS failures (a full or read-only disk, a name too long, a path that is a file) end in
one line on stderr and exit status 2; anything else is a bug and keeps its traceback.

Two layers apply it: `run_cli` around the task (in a multirun, per job: the sweep goes on), and
`hydra_main` around the whole `@hydra.main` function, for what fails before or after any task runs:
Hydra's own start (an unknown config name, an override it cannot parse, a run or sweep folder it
cannot make: a name over 255 bytes, a path through a file, a full disk) and a multirun's end.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from daamlab.errors import DaamlabError

# the exception run_cli let through as a bug: hydra_main must not dress it up as a Hydra error
_task_bug: BaseException | None = None

OS_ERRORS = {
    errno.ENOSPC: "free disk space or point paths.log_dir / paths.cache_dir at another disk",
    errno.EDQUOT: "free disk space or point paths.log_dir / paths.cache_dir at another disk",
    errno.EROFS: "point paths.log_dir / paths.cache_dir at a writable disk",
    errno.EACCES: "point paths.log_dir / paths.cache_dir at a folder you may write",
    errno.EPERM: "point paths.log_dir / paths.cache_dir at a folder you may write",
    errno.ENAMETOOLONG: "name the sweep or run folder shorter (sweep_name=..., hydra.run.dir=...)",
    errno.ENOTDIR: "a path it goes through is a file: point it at a folder",
    errno.EEXIST: "a file stands where a folder must go: move it",
    errno.EISDIR: "a folder stands where a file must go: give a file",
}

# what Lightning's DDP launcher sets in the launching process
DDP_ENVIRON = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def user_error(e: BaseException | None) -> DaamlabError | None:
    """A DaamlabError, also when a config resolver raised it (OmegaConf re-raises those as its own)."""
    while e is not None:
        if isinstance(e, DaamlabError):
            return e
        e = e.__cause__ or e.__context__
    return None


def one_line(e: BaseException) -> str | None:
    """The message an expected failure gets, or None for a bug."""
    user = user_error(e)
    if user is not None:
        return " ".join(str(user).split())
    if isinstance(e, OSError) and e.errno in OS_ERRORS:
        return f"cannot use {e.filename or 'an output path'}: {e.strerror}; {OS_ERRORS[e.errno]} (nothing was overwritten)"
    return None


@contextmanager
def ddp_relaunches_this_job() -> Iterator[None]:
    """Inside a Hydra multirun job, make Lightning's DDP start ranks >= 1 as this one job.

    Lightning starts them by re-running sys.argv with hydra.run.dir=<Hydra's run.dir>: in a multirun
    that is the whole sweep (`-m a=1,2`) in a folder that is not this job's. For the job's length,
    argv holds the job's own overrides and run.dir its output folder. After it, both are restored, and
    so are the variables the launcher set (with LOCAL_RANK set, the next job would start no ranks);
    the job's process group is closed (Lightning keeps it; the next job's ranks are new processes).
    """
    if not in_multirun():
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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@contextmanager
def job_scope() -> Iterator[None]:
    """What one job may change in the process and must restore: the thread count (the demos train
    their small heads on one thread; the next job of an in-process multirun may extract); an open
    W&B run is finished, so the next job starts its own."""
    threads = torch.get_num_threads()
    failed = True
    try:
        yield
        failed = False
    finally:
        torch.set_num_threads(threads)
        wandb = sys.modules.get("wandb")  # imported only by logger=wandb
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point's task under the exit policy. In a multirun a job that fails this way is
    recorded (its metrics.json says failed, and why) and the sweep goes on to its next job; the sweep's
    summary counts it and the sweep exits 2 (results_table.SweepTable)."""
    try:
        with job_scope(), ddp_relaunches_this_job():
            return task(cfg)
    except Exception as e:
        message = one_line(e)
        if message is None:
            global _task_bug
            _task_bug = e
            raise
        print(f"daamlab: error: {message}", file=sys.stderr)
        if in_multirun():
            return None
        raise SystemExit(2) from None


def hydra_error(e: BaseException) -> str | None:
    """The message of an error Hydra (or OmegaConf, composing for it) raised on the command line it was
    given: an unknown config group or option, an override it cannot parse, a value it cannot compose."""
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if e is _task_bug:
        return None
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    if not (
        isinstance(e, HydraException | OmegaConfBaseException) or module.startswith(("hydra.", "omegaconf."))
    ):
        return None
    text = " ".join(str(e).split()).split(" Config search path:")[0] or type(e).__name__
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {text}"
    if not isinstance(e, HydraException):  # Hydra's message names no override: show them
        text = f"{text}; in the overrides {' '.join(sys.argv[1:])[:300]!r}"
    return f"{text} (python {Path(sys.argv[0]).name} --help lists the config groups and options)"


def hydra_main(main: Callable[[], Any]) -> None:
    """Run an entry point's `@hydra.main` function under the exit policy, Hydra's own start included.

    Hydra prints its start-up errors itself (a traceback for an OSError, exit 1) unless
    HYDRA_FULL_ERROR is set: set, it raises them here, where they get the one line and exit 2.
    A bug inside the task keeps its traceback (run_cli re-raised it)."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as e:
        message = one_line(e) or hydra_error(e)
        if message is None:
            raise
        print(f"daamlab: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
