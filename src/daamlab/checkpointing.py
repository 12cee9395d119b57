"""Checkpoints: written atomically, resumed only into the config that wrote them, read only when whole.

check_checkpoint() is the one door a checkpoint comes in by (train.py's resume and ckpt_path=, eval.py):
it loads with weights_only (a pickle that would run code is refused, never run), turns every way a
file can be wrong (text, zero bytes, truncated, not a Lightning checkpoint) into one line, and compares
the checkpoint's saved hyper-parameters with those of the model the run's config builds.

Lightning's own save goes through an fsspec transaction whose temp file lives in /tmp and is moved
across filesystems on commit (a copy, not a rename). Ours writes beside the target and renames.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from daamlab.errors import DaamlabError
from daamlab.io import atomic_write

log = logging.getLogger(__name__)

# in a checkpoint's hyper-parameters: how the model runs, not what it is (toggled freely on resume)
RUNTIME_HPARAMS = {"compile", "encoder_cfg.device", "encoder_cfg.batch_size"}
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters")  # what Lightning saves and a model is rebuilt from

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


def _plain_values(node: Any) -> Any:
    """Tuples as lists, mappings as dicts: a checkpoint's values compare equal to a fresh model's."""
    if isinstance(node, Mapping):
        return {str(k): _plain_values(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain_values(v) for v in node]
    return node


def _load(path: Path) -> Any:
    """torch.load(weights_only=True) of `path`, every failure as one DaamlabError line naming the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DaamlabError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    if size == 0:
        raise DaamlabError(
            f"checkpoint {path} is empty (0 bytes): a save was cut short; use another checkpoint"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises KeyError, EOFError, RuntimeError or UnpicklingError by case
        # the weights-only unpickler's own reason follows a long generic preamble; keep just the reason
        reason = str(e).split("WeightsUnpickler error:")[-1]
        detail = " ".join((reason.strip().splitlines() or [type(e).__name__])[0].split()).split(". ")[0][:200]
        unsafe = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if unsafe:
            raise DaamlabError(
                f"checkpoint {path} was refused: it holds a pickled object ({unsafe.group(1)}) that would "
                "run code when loaded; a checkpoint holds only tensors and plain values (nothing was run)"
            ) from None
        if head == b"PK\x03\x04":  # torch.save's zip format, but its archive does not read
            raise DaamlabError(
                f"checkpoint {path} is truncated or damaged ({size} bytes; {detail}); use another checkpoint"
            ) from None
        raise DaamlabError(
            f"checkpoint {path} is not a PyTorch checkpoint ({size} bytes, neither torch.save's zip "
            f"archive nor a pickle of tensors: {type(e).__name__}: {detail})"
        ) from None


def hparam_differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """'key: x in the checkpoint, y in the run's config' for every leaf that differs (runtime keys aside)."""
    a, b = _flat(_plain_values(saved)), _flat(_plain_values(expected))
    absent = "<absent>"
    return [
        f"{k}: {a.get(k, absent)!r} in the checkpoint, {b.get(k, absent)!r} in the run's config"
        for k in sorted(set(a) | set(b))
        if k not in RUNTIME_HPARAMS and a.get(k, absent) != b.get(k, absent)
    ]


def check_checkpoint(path: Path, expected_hparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checkpoint at `path`, loaded once (weights_only, on the CPU) and checked; else one DaamlabError.

    expected_hparams: the hyper-parameters of the model the run's config builds (`model.hparams`);
    None checks only that the file is a whole, safe Lightning checkpoint."""
    path = Path(path)
    checkpoint = _load(path)
    if not isinstance(checkpoint, Mapping):
        raise DaamlabError(
            f"checkpoint {path} is not a Lightning checkpoint: it holds a {type(checkpoint).__name__}, "
            f"not a dict with {' and '.join(CHECKPOINT_KEYS)}"
        )
    for key in CHECKPOINT_KEYS:
        if not isinstance(checkpoint.get(key), Mapping):
            what = "lacks" if key not in checkpoint else f"has a {type(checkpoint[key]).__name__} as"
            raise DaamlabError(
                f"checkpoint {path} is not a daamlab checkpoint: it {what} '{key}' "
                "(train.py's checkpoints/*.ckpt hold both state_dict and hyper_parameters)"
            )
    if expected_hparams is not None:
        diffs = hparam_differences(checkpoint["hyper_parameters"], expected_hparams)
        if diffs:
            shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            raise DaamlabError(
                f"checkpoint {path} is of another model than the run's config builds ({shown}); "
                "use a checkpoint trained with these settings"
            )
    return dict(checkpoint)


def load_weights(model: Any, path: Path) -> dict[str, Any]:
    """check_checkpoint against the model's own hyper-parameters, then its weights into the model."""
    checkpoint = check_checkpoint(path, dict(model.hparams))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:  # hyper-parameters that match but weights that do not: a hand-made file
        detail = " ".join(str(e).split())[:300]
        raise DaamlabError(f"checkpoint {path}: its weights do not fit the model ({detail})") from None
    return checkpoint


def config_difference(saved: DictConfig, current: DictConfig) -> list[str]:
    """'key: saved -> current' for every RESUME_KEYS leaf that differs."""
    pick = lambda c: _flat({k: OmegaConf.to_container(c, resolve=True).get(k) for k in RESUME_KEYS})
    a, b = pick(saved), pick(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def resolve_resume(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint to resume from, or None for a fresh start.

    `ckpt_path=last` (the default) resumes this run directory's last.ckpt when there is one: a
    re-run sweep job or `hydra.run.dir=<old run>` continues where it was killed; a new run directory
    starts fresh. An explicit path must exist and be a whole checkpoint. Either way the checkpoint's
    run config must match (and _train compares its hyper-parameters with the model it builds).
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
    check_checkpoint(path, None)  # whole and safe; its hyper-parameters: once _train has built the model
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
