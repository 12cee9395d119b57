"""The config resolvers daamlab's yaml files use, registered by the entry points (and the tests'
compose fixture) before Hydra composes a config: nothing registers at import time.

- `${if_layers:<run dir>,<high|low>,<k>}`: the layer ablation's layers, from a finished run's gates
- `${job_type:<attention>}`: W&B's job_type (configs/logger/wandb.yaml)
- `${job_folder:${hydra.job.override_dirname}}`: a sweep job's folder (configs/hydra/default.yaml)
- `${name_of:<path or id>,<fallback>}`: a run on your folder/table/dataset is named after it
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from daamlab.importance import layers_from_run
from daamlab.rundir import job_folder
from daamlab.tracking import job_type


def name_of(where: str | None, fallback: str) -> str:
    """`/data/birds` -> birds, `reviews.csv` -> reviews, `user/ds` -> ds: metrics.json names your data."""
    if not where:
        return fallback
    path = Path(str(where).rstrip("/\\"))
    name = path.stem if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or fallback


RESOLVERS = {"if_layers": layers_from_run, "job_type": job_type, "job_folder": job_folder, "name_of": name_of}


def register() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
