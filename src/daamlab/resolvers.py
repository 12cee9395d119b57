"""The config resolvers daamlab's yaml files use, registered by the entry points (and the tests'
compose fixture) before Hydra composes a config: nothing registers at import time.

- `${if_layers:<run dir>,<high|low>,<k>}`: the layer ablation's layers, from a finished run's gates
- `${job_type:<attention>}`: W&B's job_type (configs/logger/wandb.yaml)
- `${job_folder:${hydra.job.override_dirname}}`: a sweep job's folder (configs/hydra/default.yaml)
"""

from __future__ import annotations

from omegaconf import OmegaConf

from daamlab.importance import layers_from_run
from daamlab.rundir import job_folder
from daamlab.tracking import job_type

RESOLVERS = {"if_layers": layers_from_run, "job_type": job_type, "job_folder": job_folder}


def register() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
