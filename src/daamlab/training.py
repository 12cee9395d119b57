"""train(cfg) and evaluate(cfg): what train.py and eval.py run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab.checkpointing import AtomicCheckpointIO, resolve_resume
from daamlab.data import build_datamodule, uses_cache
from daamlab.data.raw import RawDataModule
from daamlab.errors import DaamlabError
from daamlab.importance import save_importance  # also registers ${if_layers:...} (the layer ablation)
from daamlab.models.classifier import Classifier
from daamlab.models.encoder_classifier import EncoderClassifier
from daamlab.models.lora import LORA_METHODS, LoraClassifier
from daamlab.models.projection import cached_layer_widths
from daamlab.predictions import write_predictions
from daamlab.results_table import results_table
from daamlab.runs import finished_metrics, print_config, provenance, record_failure, save_array, write_json
from daamlab.tracking import log_config, log_results, run_tags  # also registers ${job_type:} etc. (W&B)

log = logging.getLogger(__name__)


def _plain(node) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)


def check_config(cfg: DictConfig) -> None:
    lr = cfg.optim.lr
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise DaamlabError(f"optim.lr must be a number > 0, got {lr!r}; e.g. optim.lr=1e-4")
    bs = cfg.data.batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise DaamlabError(f"data.batch_size must be a whole number >= 1, got {bs!r}")
    check_encoder_mode(cfg)


def _instantiate_all(node: DictConfig | None) -> list:
    """Every `_target_` entry of a callbacks/logger group, in order; a group set to null gives []."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def build_model(cfg: DictConfig, dm) -> Classifier:
    head = {"num_classes": dm.num_classes, "loss": _plain(cfg.loss), "optim": _plain(cfg.optim)}
    if isinstance(dm, RawDataModule):  # the encoder runs in the module (uncached mode, LoRA)
        return encoder_model(cfg, dm.encoder, dm, head)
    return Classifier(
        num_layers=dm.num_layers,
        dim=dm.dim,
        attention=_plain(cfg.attention),
        decoder=_plain(cfg.decoder),
        compile=cfg.get("compile", False),
        layer_widths=cached_layer_widths(dm),  # layers of different widths get a per-layer projection
        projection_dim=cfg.get("projection_dim"),
        **head,
    )


def check_encoder_mode(cfg: DictConfig) -> None:
    """The options of the uncached mode (encoder in the loop) make sense only there."""
    augment = OmegaConf.select(cfg, "augment.name", default="none")
    if uses_cache(cfg) and augment != "none":
        raise DaamlabError(
            f"augment={augment} changes the raw inputs every epoch, which a feature cache cannot: "
            "train with cache.enabled=false, or use augment=none"
        )
    if not uses_cache(cfg) and cfg.get("compile", False):
        raise DaamlabError(
            "compile=true compiles the head's forward on cached features; with the encoder in the "
            "loop (cache.enabled=false or LoRA) the encoder dominates: set compile=false"
        )
    if cfg.attention.name in LORA_METHODS and (
        cfg.data.get("layers") is not None or cfg.cache.get("round_fp16")
    ):
        raise DaamlabError(
            f"attention={cfg.attention.name} trains on the encoder's pooled last layer: "
            "leave data.layers=null and cache.round_fp16=false"
        )


def encoder_model(cfg: DictConfig, encoder, dm, head: dict[str, Any]) -> EncoderClassifier:
    """The frozen encoder + the configured head, or LoRA adapters + a linear head on the last layer."""
    common = {"encoder_cfg": _plain(cfg.encoder), "encoder": encoder, **head}
    if cfg.attention.name in LORA_METHODS:
        return LoraClassifier(
            lora=_plain(cfg.attention),
            num_layers=1,
            dim=dm.dim,
            attention={"name": "none"},
            decoder={"name": "linear"},
            **common,
        )
    return EncoderClassifier(
        layers=cfg.data.get("layers"),
        round_fp16=bool(cfg.cache.get("round_fp16", False)),
        num_layers=dm.num_layers,
        dim=dm.dim,
        attention=_plain(cfg.attention),
        decoder=_plain(cfg.decoder),
        **common,
    )


def run_summary(cfg: DictConfig, model: Classifier) -> dict[str, Any]:
    return {
        "modality": cfg.modality_name,
        "data": cfg.data.name,
        "fold": cfg.data.get("fold"),
        "seed": cfg.seed,
        "attention": cfg.attention.name,
        "decoder": model.hparams.decoder["name"],  # LoRA's head is linear whatever cfg.decoder says
        "tags": run_tags(cfg),  # structured + the config's: the report finds `experiment:` whatever tags= says
        "params": model.param_counts,
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one run; a sweep job that already completed is skipped, a failure is recorded."""
    out_dir = Path(cfg.paths.output_dir)
    done = finished_metrics(cfg, out_dir)
    if done is not None:
        log.info("%s already complete (best val acc %.4f): skipped", out_dir, done["best_val_acc"])
        return done
    try:
        return _train(cfg, out_dir)
    except BaseException as e:
        record_failure(cfg, out_dir, e)
        raise


def _train(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    check_config(cfg)
    resume_from = resolve_resume(cfg, out_dir)  # before print_config rewrites the run's config.yaml
    is_rank_zero = rank_zero_only.rank == 0  # DDP: Lightning starts ranks >= 1 inside fit()
    run_info = provenance()  # git SHA, versions: in run_info.json now, so a crashed run has it too
    if is_rank_zero:
        print_config(cfg, out_dir)
        write_json(out_dir / "run_info.json", run_info)
    L.seed_everything(cfg.seed, workers=True)
    started = time.time()

    dm = build_datamodule(cfg)
    if is_rank_zero:  # build a missing cache once; the other ranks start after it (or run extract.py first)
        dm.prepare_data()
    dm.setup("fit")
    # the demos train their small heads on one thread (configs/modality/*_demo.yaml); extraction,
    # before this, and an encoder inside the loop (no cache, LoRA) keep every core
    if cfg.get("torch_threads") and uses_cache(cfg):
        torch.set_num_threads(cfg.torch_threads)
    model = build_model(cfg, dm)
    summary = run_summary(cfg, model)
    log.info("trainable parameters: %s", summary["params"])

    callbacks, loggers = _instantiate_all(cfg.get("callbacks")), _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    log_config(loggers, cfg, summary["params"])
    if cfg.get("train", True):
        trainer.fit(model, datamodule=dm, ckpt_path=resume_from, weights_only=True)

    test: dict[str, float] = {}
    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint; testing the current weights")
        results = trainer.test(model, datamodule=dm, ckpt_path=best or None, weights_only=True)
        test = {k.removeprefix("test/"): float(v) for k, v in results[0].items()}

    if trainer.is_global_zero:
        if test:  # the best checkpoint's per-row test predictions
            write_predictions(out_dir / "predictions.csv", dm, model.test_probs)
        figures = {}
        if model.gated:
            gates = model.best_gates.cpu().numpy()
            save_array(out_dir / "gates.npy", gates)
            title = f"{cfg.attention.name} on {cfg.data.name}: Importance Factor"
            figures["importance"] = save_importance(out_dir, gates, cfg.data.get("layers"), title)
        metrics = {
            **summary,
            "status": "complete",
            "best_val_acc": float(model.best_val_acc),
            "best_epoch": int(model.best_epoch),
            "epochs": trainer.current_epoch,
            "test": test,
            "wall_time_s": round(time.time() - started, 2),
            "data_info": dm.data.info,
            "provenance": run_info,
            "splits": dm.split_summary,  # rows, items, groups, per-class counts of train/val/test
        }
        write_json(out_dir / "metrics.json", metrics)
        log_results(loggers, metrics, figures, out_dir)
        log.info(
            "best val acc %.4f (epoch %d); test %s", metrics["best_val_acc"], metrics["best_epoch"], test
        )
        print(f"\n{results_table([metrics])}\nrun directory: {out_dir}")
        return metrics
    return {}


def _run_config(ckpt: Path) -> DictConfig:
    """The training run's resolved config, saved beside its checkpoints/ folder."""
    path = ckpt.resolve().parent.parent / "config.yaml"
    if not path.is_file():
        raise DaamlabError(
            f"{path} not found: eval.py needs the config.yaml that train.py saved in the run directory"
        )
    return OmegaConf.load(path)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on its run's test split; the data protocol comes from the run's own config."""
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise DaamlabError(f"ckpt_path={ckpt} is not a file; point it at a run's checkpoints/*.ckpt")
    run_cfg = _run_config(ckpt)
    run_cfg.paths.output_dir = cfg.paths.output_dir
    out_dir = Path(cfg.paths.output_dir)
    print_config(cfg, out_dir)
    dm = build_datamodule(run_cfg)  # uncached mode and LoRA: builds the encoder from its source
    dm.setup("test")
    if isinstance(dm, RawDataModule):  # the checkpoint holds the head (and adapters); not the encoder
        model_class = LoraClassifier if run_cfg.attention.name in LORA_METHODS else EncoderClassifier
        model = model_class.load_from_checkpoint(
            ckpt, map_location="cpu", weights_only=True, encoder=dm.encoder
        )
    else:
        model = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    results = trainer.test(model, datamodule=dm)
    test = {k.removeprefix("test/"): float(v) for k, v in results[0].items()}
    write_predictions(out_dir / "predictions.csv", dm, model.test_probs)
    metrics = {**run_summary(run_cfg, model), "ckpt_path": str(ckpt), "test": test}
    write_json(out_dir / "eval_metrics.json", metrics)
    return metrics
