"""Run directories: the resolved config, metrics.json (atomic), and the one-line error handling of the CLIs."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same directory, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        tmp = f.name
    os.replace(tmp, path)


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


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an entry point; bad input ends in one line on stderr and exit status 2, not a traceback."""
    try:
        return task(cfg)
    except DaamlabError as e:
        print(f"daamlab: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
