"""hydra/sweeper=daamlab_optuna: Hydra's Sweeper interface over daamlab.search (Optuna ask/tell).

Chosen by configs/hparams_search/optuna.yaml. Hydra finds this module because `hydra_plugins` is a
namespace package on the path (installed from src/ by pyproject.toml). The search itself, its
spaces and its checks are daamlab/search.py; here: Hydra's config node, composing a job's config,
launching jobs, and the one-line error of a refused search.
"""

# no `from __future__ import annotations`: Hydra's plugin scan imports this module in a way that
# leaves string annotations of the dataclass below unresolvable
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class DaamlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.daamlab_optuna.sweeper.DaamlabOptunaSweeper"
    n_trials: int = 20  # per variant
    study_name: str = "search"
    storage: Optional[str] = None  # noqa: UP045 (OmegaConf reads Optional)  null: sqlite:///<sweep dir>/optuna.db
    sampler_seed: Optional[int] = 0  # noqa: UP045
    pruner: str = "median"  # median | none
    n_jobs: int = 1  # trials launched at a time (in parallel with a parallel launcher)
    rerun_best: bool = True  # re-run the best configuration on every point of the swept grid


ConfigStore.instance().store(group="hydra/sweeper", name="daamlab_optuna", node=DaamlabOptunaSweeperConf)


class DaamlabOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _compose(self, overrides: list[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)

    def _launch(self, jobs: list[list[str]]) -> list[Any]:
        returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
        self.job_idx += len(jobs)
        # a failed job's return_value re-raises its error; the search records it as a failed trial
        return [r._return_value if r.status.name != "COMPLETED" else r.return_value for r in returns]

    def sweep(self, arguments: list[str]) -> Any:
        from daamlab.errors import DaamlabError
        from daamlab.search import run_search

        sweep_dir = Path(self.config.hydra.sweep.dir)  # made once the search's checks pass
        options = dict(self.options)
        options["storage"] = options.get("storage") or f"sqlite:///{sweep_dir / 'optuna.db'}"
        try:
            return run_search(arguments, compose=self._compose, launch=self._launch, **options)
        except DaamlabError as e:  # as the entry points: one line, exit status 2
            print(f"daamlab: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
