"""The config resolvers daamlab's yaml files use, registered by the entry points (and the tests'
compose fixture) before Hydra composes a config: nothing registers at import time.

- `${if_layers:<run dir>,<high|low>,<k>}`: the layer ablation's layers, from a finished run's gates
- `${run_name:}`, `${job_type:}`, `${run_tags:}`, `${run_id:<run dir>}`: how W&B files a run
  (configs/logger/wandb.yaml)
- `${job_folder:${hydra.job.override_dirname}}`: a sweep job's folder (configs/hydra/default.yaml)
- `${name_of:<path or id>,<fallback>}`: a run on your folder/table/dataset is named after it
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from daamlab.importance import layers_from_run
from daamlab.rundir import job_folder
from daamlab.tracking import run_id, run_name, run_tags, variant


def name_of(where: str | None, fallback: str) -> str:
    """`/data/birds` -> birds, `reviews.csv` -> reviews, `user/ds` -> ds: metrics.json names your data."""
    if not where:
        return fallback
    path = Path(str(where).rstrip("/\\"))
    name = path.stem if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or fallback


RESOLVERS = {
    "if_layers": layers_from_run,
    "job_folder": job_folder,
    "name_of": name_of,
    # of the whole config
    "run_name": lambda *, _root_: run_name(_root_),
    "job_type": lambda *, _root_: variant(_root_),
    "run_tags": lambda *, _root_: run_tags(_root_),
    "run_id": run_id,
}


def register() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
