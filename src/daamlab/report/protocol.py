"""Which runs follow their protocol, and which are search trials or tuned re-runs.

The rule, kept simple: a run's protocol is the config files that chose it, its modality
(configs/modality/<name>.yaml) and on top its experiment (configs/experiment/<name>.yaml). Every plain
value they set, plus data.dev_fraction (0, validation on test, unless a file says otherwise), must be
the run's too; the keys a sweep varies (seed, data.fold, the layer ablation's inputs) and how a run
is filed (tags, sweep_name) are not protocol. A run that changes any is off-protocol (e.g. trainer.max_epochs=2): the
report keeps it in a section of its own, named by what changed. A tuned run's searched keys
(`search.keys`) are what the search chose, not deviations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
# what a sweep varies (seed, fold, the IF ablation's inputs) and how a run is filed
NOT_PROTOCOL = {"defaults", "tags", "experiment_tags", "sweep_name", "seed", "data.fold", "modality_name"}
INPUTS = ("ablation.",)  # prefixes: the layer ablation's from_run, pick and num_layers
ALWAYS = {"data.dev_fraction": 0.0}  # what "best validation accuracy" means: on test, or on a dev split


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out |= _leaves(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def _file_values(path: Path) -> dict[str, Any]:
    """The plain values a config file sets, and (first) those of the modality its defaults choose:
    an experiment sets only what differs from its modality, whose protocol it keeps."""
    if not path.is_file():
        return {}
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    base: dict[str, Any] = {}
    for entry in raw.get("defaults", []) or []:
        if isinstance(entry, dict) and entry.get("override /modality"):
            base = _file_values(CONFIGS / "modality" / f"{entry['override /modality']}.yaml")
    fixed = {k: v for k, v in _leaves(raw).items() if k not in NOT_PROTOCOL and not k.startswith(INPUTS)}
    return {**base, **{k: v for k, v in fixed.items() if not (isinstance(v, str) and "${" in v)}}


def protocol_values(experiment: str | None, modality: str | None) -> dict[str, Any]:
    """Key -> value the protocol fixes (interpolations, which depend on the run, are left out)."""
    if not (experiment or modality):
        return dict(ALWAYS)
    base = _file_values(CONFIGS / "modality" / f"{modality}.yaml") if modality else {}
    if not experiment:
        return {**ALWAYS, **base}
    # an experiment keeps its modality's protocol: the one its defaults choose, or (the layer
    # ablation, listed after a paper experiment) the run's
    return {**ALWAYS, **base, **_file_values(CONFIGS / "experiment" / f"{experiment}.yaml")}


def deviations(cfg: DictConfig, experiment: str | None) -> list[str]:
    """`key=value` for every protocol key the run's config.yaml sets otherwise, sorted."""
    searched = set(OmegaConf.select(cfg, "search.keys", default=[]) or [])
    out = []
    for key, want in protocol_values(experiment, OmegaConf.select(cfg, "modality_name")).items():
        have = OmegaConf.select(cfg, key, default=want)
        if key not in searched and have != want and not _same_number(have, want):
            out.append(f"{key}={have}")
    return sorted(out)


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and float(a) == float(b)
    )
