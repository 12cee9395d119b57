"""Hyper-parameter search on the dev split: search spaces per variant family, the objective check,
one Optuna study per variant (ask/tell), pruning per epoch, and the re-run of the best configuration.

    python train.py -m hparams_search=optuna data.dev_fraction=0.2 [attention=daam,mhsa] [seed=1,2,3]

The Hydra plugin (hydra_plugins/daamlab_optuna) only adapts this to Hydra's Sweeper interface.
How a search runs:
- each `attention` value gets its own study (`<study_name>-<variant>`) and the same n_trials;
- n_jobs trials are asked at a time and launched as one batch: with launcher=joblib (n_jobs defaults
  to the launcher's) or launcher=slurm they train in parallel, and the sampler's constant liar keeps
  a batch's trials apart;
- trials train on the first value of every other swept key (e.g. seed=1) and are scored on the
  accuracy on the split they validate on (train.py returns best_val_acc): a dev split
  (data.dev_fraction > 0) or the data's own validation split. A search whose validation split would
  be the test split (the paper's protocol) is refused before any trial runs: it would tune on test.
  Trials run with test=false: only the tuned re-runs are tested;
- a trial's run directory is <sweep dir>/search/<variant>/trial_<n>; the best configuration is then
  re-run on every point of the swept grid in <sweep dir>/tuned/<variant>/<point>; both carry a
  `search` config key (role trial | tuned, the study, the searched keys) that the report reads;
- the study lives in a SQLite file in the sweep folder: re-running the same command with the same
  sweep_name resumes it (trials already finished count toward n_trials);
- TrialPruning (a Lightning callback) reports val/acc per epoch to the trial through that storage and
  stops a trial the pruner gives up on; the trial is then told PRUNED (its run directory is a finished,
  shorter run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from daamlab.errors import DaamlabError

log = logging.getLogger(__name__)

# (kind, low, high) for numbers, ("categorical", choices) for choices; kind "log" samples log-uniformly
Space = dict[str, tuple]
OPTIM: Space = {"optim.lr": ("log", 1e-5, 1e-2), "optim.weight_decay": ("log", 1e-4, 0.3)}
DAAM: Space = {
    "attention.delta_init": ("float", -0.5, 0.5),  # the Gaussians' mean offset δ at init
    "attention.xi_init": ("float", 0.5, 4.0),  # their scale ξ at init
    "attention.num_heads": ("categorical", [1, 2, 4, 8]),  # layer groups (divide the toy's 24 layers)
}
HEADS: Space = {"attention.num_heads": ("categorical", [1, 2, 4, 8])}
SPACES: dict[str, Space] = {
    "daam": {**OPTIM, **DAAM},
    "daam_v2": {**OPTIM, **{k: v for k, v in DAAM.items() if k != "attention.num_heads"}},
    "gaussian": {**OPTIM, **DAAM},
    "gq_daam": {**OPTIM, **HEADS},
    "daam_mixture": {**OPTIM, **HEADS},
    "mhsa": {**OPTIM, **HEADS},
    "mhsa_bn": {**OPTIM, **HEADS},
    "mhsa_paper": {**OPTIM, **HEADS},
    "lora": {**OPTIM, "attention.dropout": ("float", 0.0, 0.3)},
    "lora_plus": {**OPTIM, "attention.dropout": ("float", 0.0, 0.3)},
}


def search_space(attention: str) -> Space:
    """The keys searched for a variant: its family's, or lr and weight decay for heads without options."""
    return SPACES.get(attention, OPTIM)


def check_objective(cfg: DictConfig) -> None:
    """Refuse a search whose objective (best_val_acc) would be read on the test split. The datamodule's
    own rule decides (data.validation_split), on the splits the source lists (no features are read)."""
    from daamlab.data import validation_split
    from daamlab.sources import build_source

    dev = cfg.data.get("dev_fraction", 0) or 0
    fold = cfg.data.get("fold")
    if validation_split(dev, fold, [] if dev > 0 else build_source(cfg.data).splits()) == "test":
        raise DaamlabError(
            f"hparams_search on data.dev_fraction={dev} would tune on the test split ({cfg.data.name} "
            "has no validation split of its own here, so it validates on test: the paper's protocol): "
            "hold out a dev split, e.g. data.dev_fraction=0.2"
        )


def check_options(*, n_trials: Any, study_name: Any, storage: str, pruner: str, n_jobs: Any) -> None:
    """The sweeper's keys, checked before the study is opened or its folder made."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    for key, value, what in (
        ("n_trials", n_trials, "trials per variant"),
        ("n_jobs", n_jobs, "trials run at a time"),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DaamlabError(f"hydra.sweeper.{key}={value!r} must be an integer >= 1: {what}")
    if not isinstance(study_name, str) or not study_name.strip():
        raise DaamlabError(
            f"hydra.sweeper.study_name={study_name!r} must be a non-empty name (it names the study to resume)"
        )
    try:
        make_url(storage)
    except ArgumentError:
        raise DaamlabError(
            f"hydra.sweeper.storage={storage!r} is not a database URL: e.g. sqlite:////abs/path/optuna.db "
            "(null: a SQLite file in the sweep folder)"
        ) from None
    build_pruner(pruner)


def build_pruner(name: str):
    """median: stop a trial whose dev accuracy at an epoch trails the median of earlier trials' at that
    epoch (after 2 finished trials and 1 warm-up epoch); none: never. Built by the sweeper and by every
    job's TrialPruning alike: a study's pruner is not in its storage."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise DaamlabError(f"hydra.sweeper.pruner={name!r} is not a pruner: median or none")


def suggest(trial, space: Space) -> dict[str, Any]:
    params = {}
    for key, (kind, *args) in space.items():
        if kind == "categorical":
            params[key] = trial.suggest_categorical(key, args[0])
        else:
            params[key] = trial.suggest_float(key, args[0], args[1], log=kind == "log")
    return params


def as_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]


@dataclass
class Plan:
    """A search command split into what every job gets, the variants (one study each) and the grid."""

    fixed: list[str]  # overrides passed to every job
    variants: list[str | None]  # attention values; [None] when the command sweeps no attention
    grid: list[list[str]]  # every combination of the other swept keys (trials use the first)


def plan(arguments: Sequence[str]) -> Plan:
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed, variants, axes = [], [None], []
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif key == "attention":
            variants = list(override.sweep_string_iterator())
        else:
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
    return Plan(fixed, variants, [list(p) for p in itertools.product(*axes)])


def point_name(point: list[str]) -> str:
    return ",".join(point) or "default"


def subdir(path: str) -> str:
    """The override placing a job in <sweep dir>/<path>, quoted: a grid point's name holds `=` and `,`."""
    return "hydra.sweep.subdir='" + path.replace("'", "\\'") + "'"


Launch = Callable[[list[list[str]]], list[Any]]  # job overrides -> returns (float or an exception)


def run_search(
    arguments: Sequence[str],
    *,
    compose: Callable[[list[str]], DictConfig],
    launch: Launch,
    n_trials: int,
    study_name: str,
    storage: str,
    sampler_seed: int | None = 0,
    pruner: str = "median",
    n_jobs: int = 1,
    rerun_best: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every variant's study; returns variant -> {best value, best params}. `compose(overrides)` is
    a job's config (the objective is checked on it before anything runs); `launch` runs a batch of
    jobs (in parallel with a parallel launcher): `n_jobs` trials are asked and launched at a time."""
    import optuna

    p = plan(arguments)
    jobs = {v: p.fixed + ([f"attention={v}"] if v else []) + p.grid[0] for v in p.variants}
    configs = {v: compose(overrides) for v, overrides in jobs.items()}
    for cfg in configs.values():  # before any trial: a refused search trains nothing
        check_objective(cfg)
    check_options(n_trials=n_trials, study_name=study_name, storage=storage, pruner=pruner, n_jobs=n_jobs)
    results = {}
    for variant, cfg in configs.items():
        name = cfg.attention.name
        study = optuna.create_study(
            study_name=f"{study_name}-{variant or name}",
            storage=open_storage(storage),
            direction="maximize",
            # trials asked while others run: the liar keeps a batch from sampling one point n_jobs times
            sampler=optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=n_jobs > 1),
            pruner=build_pruner(pruner),
            load_if_exists=True,
        )
        _fail_stale(study)
        space = search_space(name)
        meta = [
            f"+search.study={study.study_name}",
            f"+search.storage='{storage}'",
            f"+search.pruner={pruner}",
        ]
        meta.append(f"+search.keys=[{','.join(space)}]")
        while (done := _finished(study)) < n_trials:
            batch = [study.ask() for _ in range(min(n_jobs, n_trials - done))]  # launched together
            trial_jobs = []
            for i, trial in enumerate(batch, start=done + 1):
                params = suggest(trial, space)
                log.info("%s trial %d (%d/%d): %s", study.study_name, trial.number, i, n_trials, params)
                trial_jobs.append([
                    # test=false: a trial never reads the test split, so none can be picked by it
                    *jobs[variant], *as_overrides(params), *meta, "+search.role=trial", "test=false",
                    # the storage's id of the trial: what TrialPruning needs to attach to it from the job
                    f"+search.trial={trial.number}", f"+search.trial_id={trial._trial_id}",
                    subdir(f"search/{name}/trial_{trial.number:03d}"),
                ])  # fmt: skip
            for trial, value in zip(batch, launch(trial_jobs), strict=True):
                _tell(study, trial, value, storage)
        best = _best(study)
        results[variant or name] = best
        if best is None:
            log.warning("%s: no trial completed; nothing to re-run", study.study_name)
            continue
        log.info("%s best dev acc %.4f: %s", study.study_name, best["value"], best["params"])
        if rerun_best:
            tuned = [
                [
                    *p.fixed, *([f"attention={variant}"] if variant else []), *point,
                    *as_overrides(best["params"]), *meta, "+search.role=tuned",
                    f"+search.trial={best['number']}", subdir(f"tuned/{name}/{point_name(point)}"),
                ]
                for point in p.grid
            ]  # fmt: skip
            launch(tuned)
    return results


def open_storage(url: str):
    """The study's storage. SQLite: its folder is made here, after the search's checks (a refused
    search leaves nothing behind), and a lock is waited for up to a minute, since parallel trials
    (n_jobs > 1) report to the same file as the sweeper writes it."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url)
    except (OSError, ImportError, SQLAlchemyError) as e:  # no folder, no driver, no server
        reason = str(e).splitlines()[0]
        raise DaamlabError(
            f"cannot open the study's storage hydra.sweeper.storage={url!r}: {reason}"
        ) from None


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _fail_stale(study) -> None:
    """A trial left RUNNING by a killed search never finishes: fail it, so the resumed one re-asks."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)


def _tell(study, trial, value: Any, storage: str) -> None:
    from optuna.trial import TrialState

    # set by TrialPruning through its own connection; this study's cached copy of a running trial
    # does not see it: read it from a fresh one
    fresh = open_storage(storage).get_trial(trial._trial_id)
    pruned_at = fresh.user_attrs.get("pruned_at_epoch")
    if isinstance(value, BaseException) or value is None:
        log.warning("trial %d failed: %s", trial.number, value)
        study.tell(trial, state=TrialState.FAIL)
    elif pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, float(value))


def _best(study) -> dict[str, Any] | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    t = max(complete, key=lambda t: t.value)
    return {"value": t.value, "params": t.params, "number": t.number}


class TrialPruning(L.Callback):
    """Reports val/acc (the dev accuracy) per epoch to the search's trial and stops the run when the
    pruner says so. Inert outside a search (no trial). Works across processes: it talks to the trial
    through the study's storage, so joblib workers prune too."""

    def __init__(
        self,
        study: str | None = None,
        storage: str | None = None,
        trial_id: int | None = None,
        pruner: str = "median",
    ) -> None:
        self.trial = None
        if study is not None and storage is not None and trial_id is not None:
            import optuna

            loaded = optuna.load_study(
                study_name=study, storage=open_storage(storage), pruner=build_pruner(pruner)
            )
            self.trial = optuna.trial.Trial(loaded, trial_id)

    # on_validation_end: a callback's on_validation_epoch_end runs before the module logs this epoch's
    # val/acc, so it would report the previous epoch's
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None or trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics["val/acc"]), epoch)
        if self.trial.should_prune():
            log.info("trial %d pruned at epoch %d", self.trial.number, epoch)
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            trainer.should_stop = True
