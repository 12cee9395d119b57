"""Files: the one atomic writer, and the one lock.

The atomic writer: every file daamlab writes goes to a temp file beside its target, then is
renamed over it, so a reader (or a resumed run) never sees half a file and a failed write (a full
disk, a kill) leaves the previous file as it was and no temp file behind."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write(binary file)` into a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, payload: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n")


def write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def write_figure(path: Path, fig: Any, dpi: int = 110) -> None:
    """A matplotlib figure, in the format its suffix names (.png)."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi))


@contextmanager
def exclusive(lock_path: Path, *, wait: bool) -> Iterator[bool]:
    """An flock on `lock_path` (the OS releases it if the process dies); yields whether it is held.
    One extraction per cache, one training per sweep job folder."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
