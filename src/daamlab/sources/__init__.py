"""Data sources: one module per dataset, each with `build(cfg.data) -> Source` (see base.py).

`data.source` (default: `data.name`) names the module here (`iemocap`, `audio_folder`...), or a
source of your own outside the package: `my_package.my_module:MySource` or
`/path/to/my_source.py:MySource`. A class is constructed with the `data` config node, a function
called with it; either must give a Source (docs/own-data.md has a complete example).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from daamlab.errors import DaamlabError
from daamlab.sources.base import Item, Source, waveform_16k

SOURCE_ATTRIBUTES = ("name", "kind", "class_names", "version", "splits", "items", "num_items")


def build_source(cfg: DictConfig) -> Source:
    name = cfg.get("source") or cfg.name
    if ":" in str(name):
        return _own_source(str(name), cfg)
    try:
        module = importlib.import_module(f"daamlab.sources.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"daamlab.sources.{name}":
            raise
        raise DaamlabError(
            f"unknown data source '{name}'; see configs/data/, or bring your own with "
            "data.source=my_module:MySource"
        ) from None
    return module.build(cfg)


def _own_source(spec: str, cfg: DictConfig) -> Source:
    """`module:Name` or `path/to/file.py:Name` -> Name(cfg), checked to look like a Source."""
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute:
        raise DaamlabError(f"data.source={spec} must be module:Name or /path/to/file.py:Name")
    module = _import(where, spec)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise DaamlabError(f"data.source={spec}: {where} has no class or function '{attribute}'")
    source: Any = factory(cfg)
    missing = [a for a in SOURCE_ATTRIBUTES if not hasattr(source, a)]
    if missing:
        raise DaamlabError(
            f"data.source={spec} gave a {type(source).__name__} without {', '.join(missing)}: "
            "a source needs name, kind, class_names, version, splits(), items(split), num_items(split)"
        )
    return source


def _import(where: str, spec: str):
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise DaamlabError(f"data.source={spec}: {path} is not a file")
        module_name = f"daamlab_user_source_{path.stem}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[module_name] = module
        spec_.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.startswith(e.name):
            raise DaamlabError(
                f"data.source={spec}: no module '{e.name}' on the Python path; run from its folder with "
                "PYTHONPATH=. or give the file: data.source=/path/to/file.py:Name"
            ) from None
        raise


__all__ = ["Item", "Source", "build_source", "waveform_16k"]
