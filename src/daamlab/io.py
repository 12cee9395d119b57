"""Files: the one atomic writer, the one lock, and the readers of a run's arrays and JSON files.

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

from daamlab.errors import DaamlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide results from a group


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`write(binary file)` into a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
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


def unreadable(path: Path, error: Exception) -> DaamlabError:
    """The one message for a run's file that cannot be read (damaged, truncated, another format)."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DaamlabError(
        f"{path} cannot be read ({reason}); re-run that run, or delete the file to go on without it"
    )


def read_array(path: Path) -> np.ndarray:
    """A run's .npy (gates, layer importance)."""
    try:
        return np.load(path, allow_pickle=False)
    except OSError as e:
        raise unreadable(path, e) from None
    except (ValueError, EOFError):  # numpy's words for a text file are about pickles: misleading here
        raise unreadable(path, ValueError("not a .npy array of numbers")) from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A run's JSON file holding an object (layer_importance.json; the record has its own reader)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise unreadable(path, e) from None
    if not isinstance(data, dict):
        raise unreadable(path, ValueError(f"a JSON {type(data).__name__}, not an object"))
    return data
