"""Provenance: what every number traces back to — the code's git commit (and whether it had local
changes), the Python and package versions and the command. The cache fingerprint is in the run
record's data_info."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = ("daamlab", "torch", "lightning", "hydra-core", "transformers", "numpy", "torchmetrics")


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git(root, "rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "command": " ".join(sys.argv),
    }
