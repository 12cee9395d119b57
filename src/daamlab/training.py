"""train(cfg) and evaluate(cfg): what train.py and eval.py run, as a handful of named steps.

    train:    skip if finished -> validate -> save config -> build (datamodule, model) -> fit -> test
              -> artifacts (predictions, gates, figures) -> run record
    evaluate: read the run's config -> build -> load the checked checkpoint -> test -> eval record

The mode (cached head, encoder in the loop, LoRA) is decided in build.py; the run directory's
files and the skip policy in rundir.py; the record's schema in record.py.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab import rundir
from daamlab.accuracy import EpochHistory, save_accuracy_figure
from daamlab.build import build
from daamlab.checkpointing import AtomicCheckpointIO, check_checkpoint, load_weights, resolve_resume
from daamlab.data import FeatureDataModule
from daamlab.errors import DaamlabError
from daamlab.importance import save_importance
from daamlab.io import write_npy
from daamlab.layer_importance import save_layer_importance
from daamlab.models.classifier import Classifier
from daamlab.predictions import write_predictions
from daamlab.provenance import provenance
from daamlab.record import RunRecord
from daamlab.results_table import results_table
from daamlab.tracking import experiment_name, log_config, log_results, run_tags, variant
from daamlab.validate import validate

log = logging.getLogger(__name__)

# Two lines per job nobody here can act on: Lightning's advertisement for its cloud logger and a
# deprecation warning raised inside Lightning's own code by torch 2.13's pytree.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def train(cfg: DictConfig) -> RunRecord | None:
    """Train and test one run (None on DDP ranks > 0); a finished sweep job is skipped, a failure recorded."""
    out_dir = Path(cfg.paths.output_dir)
    done = rundir.finished_record(cfg, out_dir)
    if done is not None:
        log.info("%s already complete (best val acc %.4f): skipped", out_dir, done.best_val_acc)
        return done
    if rank_zero_only.rank != 0:  # DDP ranks >= 1 run inside rank 0's job (and its lock)
        return _train(cfg, out_dir)
    with rundir.job_lock(out_dir) as held:
        if not held:
            raise DaamlabError(
                f"{out_dir} is being trained by another process (another sweep of this name): skipped"
            )
        done = rundir.finished_record(cfg, out_dir)  # it may have finished while this one waited
        if done is not None:
            return done
        try:
            return _train(cfg, out_dir)
        except BaseException as e:
            RunRecord.failed(cfg, e).write(out_dir / rundir.METRICS)
            raise


def _train(cfg: DictConfig, out_dir: Path) -> RunRecord | None:
    validate(cfg)
    resume_from = resolve_resume(cfg, out_dir)  # before save_config rewrites the run's config.yaml
    started, run_info = time.time(), provenance()
    if rank_zero_only.rank == 0:  # DDP: Lightning starts ranks >= 1 inside fit()
        rundir.save_config(cfg, out_dir)
        rundir.save_run_info(out_dir, run_info)  # now, so a crashed run has it too
    L.seed_everything(cfg.seed, workers=True)
    dm, model = build(cfg)
    if resume_from:  # the checkpoint must be of the model this config builds (variant, shapes, classes)
        check_checkpoint(Path(resume_from), dict(model.hparams))
    log.info("trainable parameters: %s", model.param_counts)
    trainer, loggers = make_trainer(cfg)
    log_config(loggers, cfg, model.param_counts)
    trainer.fit(model, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    test = run_test(trainer, model, dm, cfg)
    if not trainer.is_global_zero:
        return None
    figures = write_artifacts(out_dir, cfg, dm, model, trainer, tested=bool(test))
    record = RunRecord(
        status="complete",
        **{
            **RunRecord.identity(cfg),
            "decoder": model.hparams.decoder["name"],  # LoRA's head is linear whatever cfg.decoder says
            "tags": run_tags(
                cfg
            ),  # structured + the config's: the report finds `experiment:` whatever tags= says
            "experiment": experiment_name(cfg),
            "variant": variant(cfg),
            "search_role": OmegaConf.select(cfg, "search.role"),
        },
        best_val_acc=float(model.best_val_acc),
        best_epoch=int(model.best_epoch),
        epochs=trainer.current_epoch,
        test=test,
        params=model.param_counts,
        splits=dm.split_summary,
        data_info=dm.data.info,
        provenance=run_info,
        wall_time_s=round(time.time() - started, 2),
    )
    record.write(out_dir / rundir.METRICS)  # refuses `complete` with no epoch or non-finite numbers
    log_results(loggers, record, figures, out_dir)
    log.info("best val acc %.4f (epoch %d); test %s", record.best_val_acc, record.best_epoch, test)
    print(f"\n{results_table([record])}\nrun directory: {out_dir}")
    return record


def make_trainer(cfg: DictConfig) -> tuple[L.Trainer, list[Logger]]:
    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    callbacks.append(EpochHistory())  # always, whatever callbacks= says: the run's accuracy figure
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    return trainer, loggers


def _instantiate_all(node: DictConfig | None) -> list:
    """Every `_target_` entry of a callbacks/logger group, in order; a group set to null gives []."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def run_test(
    trainer: L.Trainer, model: Classifier, dm: FeatureDataModule, cfg: DictConfig
) -> dict[str, float]:
    """Test the best checkpoint (the current weights when there is none, e.g. callbacks=none)."""
    if not cfg.get("test", True):
        return {}
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback else ""
    if best and not Path(best).is_file() and callback.dirpath:
        # resumed from a last.ckpt saved before the run (or its sweep) was moved: the best checkpoint's
        # path in it is the old one; the file is in this run's checkpoints/ folder under its own name
        best = str(Path(callback.dirpath) / Path(best).name)
    if not best:
        log.warning("no best checkpoint; testing the current weights")
    results = trainer.test(model, datamodule=dm, ckpt_path=best or None, weights_only=True)
    return {k.removeprefix("test/"): float(v) for k, v in results[0].items()}


def write_artifacts(
    out_dir: Path, cfg: DictConfig, dm: FeatureDataModule, model: Classifier, trainer: L.Trainer, tested: bool
) -> dict[str, Path]:
    """predictions.csv of the tested checkpoint, the accuracy figure; a gated head's gates and
    Importance Factor figure; the occlusion figure."""
    if tested:
        write_predictions(out_dir / rundir.PREDICTIONS, dm, model.test_probs)
    figures = {}
    (history,) = [c for c in trainer.callbacks if isinstance(c, EpochHistory)]
    val_name = {"dev": "dev", "validation": "validation"}.get(dm.validates_on, "val (= test split)")
    accuracy = save_accuracy_figure(
        out_dir, history.epochs, int(model.best_epoch), out_dir / rundir.PREDICTIONS if tested else None,
        val_name=val_name, title=f"{variant(cfg)} on {cfg.data.name}",
    )  # fmt: skip
    if accuracy:
        figures["accuracy"] = accuracy
    if model.gated:
        gates = model.best_gates.cpu().numpy()
        write_npy(out_dir / "gates.npy", gates)
        title = f"{cfg.attention.name} on {cfg.data.name}: Importance Factor"
        figures["importance"] = save_importance(out_dir, gates, cfg.data.get("layers"), title)
    # occlusion per layer, any variant on cached features: the yardstick for the IF (layer_importance.py)
    if cfg.get("layer_importance", True):
        title = f"{cfg.attention.name} on {cfg.data.name}"
        if fig := save_layer_importance(out_dir, model, dm, title, ig_steps=cfg.get("ig_steps", 0)):
            figures["layer_importance"] = fig
    return figures


# ---------------------------------------------------------------------------------------------- eval


def _run_config(ckpt: Path) -> DictConfig:
    """The training run's resolved config, saved beside its checkpoints/ folder."""
    path = ckpt.resolve().parent.parent / rundir.CONFIG
    if not path.is_file():
        raise DaamlabError(
            f"{path} not found: eval.py needs the config.yaml that train.py saved in the run directory"
        )
    try:
        return OmegaConf.load(path)
    except Exception as e:  # a damaged config.yaml: YAML errors of several kinds
        raise DaamlabError(
            f"{path} cannot be read as YAML ({type(e).__name__}); eval.py needs the run's config"
        ) from None


def evaluate(cfg: DictConfig) -> RunRecord:
    """Test a checkpoint on its run's test split; the data protocol comes from the run's own config."""
    validate(cfg, needs_data=False)  # the trainer's keys; the data protocol is the run's own
    ckpt_path = OmegaConf.select(cfg, "ckpt_path", default=None)  # ??? (not given) reads as None
    if not ckpt_path:
        raise DaamlabError(
            "ckpt_path is not set: give the checkpoint to score, e.g. "
            "python eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt"
        )
    ckpt = Path(str(ckpt_path))
    if not ckpt.is_file():
        raise DaamlabError(f"ckpt_path={ckpt_path} is not a file; point it at a run's checkpoints/*.ckpt")
    out_dir = Path(cfg.paths.output_dir)
    if rundir.holds_training_run(out_dir):
        raise DaamlabError(
            f"{out_dir} holds a training run; eval.py writes its own folder: leave hydra.run.dir unset"
        )
    run_cfg = _run_config(ckpt)
    rundir.save_config(cfg, out_dir, name=rundir.EVAL_CONFIG)
    dm, model = build(run_cfg, stage="test")
    load_weights(model, ckpt)  # refuses another head, another feature shape, a damaged file
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    results = trainer.test(model, datamodule=dm)
    test = {k.removeprefix("test/"): float(v) for k, v in results[0].items()}
    write_predictions(out_dir / rundir.PREDICTIONS, dm, model.test_probs)
    identity: dict[str, Any] = {**RunRecord.identity(run_cfg), "decoder": model.hparams.decoder["name"]}
    record = RunRecord(
        status="complete", **identity, test=test, params=model.param_counts, ckpt_path=str(ckpt)
    )
    record.write(out_dir / rundir.EVAL_METRICS)
    return record
