"""Checkpoints: written atomically, resumed only into the config that wrote them.

Lightning's own save goes through an fsspec transaction whose temp file lives in /tmp and is moved
across filesystems on commit (a copy, not a rename). Ours writes beside the target and renames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.io import atomic_write

log = logging.getLogger(__name__)

# what decides the model and its data: a checkpoint resumes only into the same values
RESUME_KEYS = ("modality_name", "seed", "data", "encoder", "attention", "decoder", "loss", "optim", "augment")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def config_difference(saved: DictConfig, current: DictConfig) -> list[str]:
    """'key: saved -> current' for every RESUME_KEYS leaf that differs."""
    pick = lambda c: _flat({k: OmegaConf.to_container(c, resolve=True).get(k) for k in RESUME_KEYS})
    a, b = pick(saved), pick(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def resolve_resume(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint to resume from, or None for a fresh start.

    `ckpt_path=last` (the default) resumes this run directory's last.ckpt when there is one: a
    re-run sweep job or `hydra.run.dir=<old run>` continues where it was killed; a new run directory
    starts fresh. An explicit path must exist. Either way the checkpoint's run config must match.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if ckpt == "last":
        path = out_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            return None
    else:
        path = Path(ckpt)
        if not path.is_file():
            raise DaamlabError(f"ckpt_path={ckpt} is not a file; give a checkpoint path, 'last', or null")
    saved_cfg = path.resolve().parent.parent / "config.yaml"
    if saved_cfg.is_file():
        diff = config_difference(OmegaConf.load(saved_cfg), cfg)
        if diff:
            raise DaamlabError(
                f"{path} was trained with another config ({'; '.join(diff)}); resume it with the same "
                "settings, or start a new run (ckpt_path=null, or another run directory)"
            )
    log.info("resuming from %s", path)
    return str(path)


# hyper-parameters that do not shape the weights: a checkpoint may differ in them
RUNTIME_HPARAMS = ("compile", "optim", "loss")


def load_checked(path: Path, model) -> None:
    """Load a checkpoint's weights into `model` (built from the run's config) after checking that it
    is a readable checkpoint of the same head on the same feature shape; refuse with the differences."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as e:
        reason = " ".join(str(e).split())[:160]
        raise DaamlabError(f"{path} is not a readable checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DaamlabError(f"{path} is not a Lightning checkpoint (no state_dict)")
    saved, expected = ckpt.get("hyper_parameters") or {}, dict(model.hparams)
    a, b = (
        _flat({k: saved.get(k) for k in expected if k not in RUNTIME_HPARAMS}),
        _flat({k: v for k, v in expected.items() if k not in RUNTIME_HPARAMS}),
    )
    diff = [
        f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} in the run's config"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    if diff:
        raise DaamlabError(f"{path} holds another model than its run's config builds: {'; '.join(diff[:4])}")
    model.load_state_dict(ckpt["state_dict"])
