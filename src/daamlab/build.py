"""The one mode decision: a config -> (datamodule, model), for train.py and eval.py alike.

| mode      | when                                   | data                        | model                |
|-----------|----------------------------------------|-----------------------------|----------------------|
| `cached`  | the default                            | the feature cache (built on demand) | Classifier   |
| `encoder` | `cache.enabled=false`                  | raw items, encoder in the loop | EncoderClassifier |
| `lora`    | `attention=lora` or `lora_plus`        | raw items, adapters in the encoder | LoraClassifier |

Nothing else in daamlab branches on the mode: every other module takes what this one built.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from daamlab.data import FeatureDataModule, build_datamodule
from daamlab.errors import DaamlabError
from daamlab.models.classifier import Classifier
from daamlab.models.encoder_classifier import EncoderClassifier
from daamlab.models.lora import LoraClassifier
from daamlab.models.projection import cached_layer_widths


class Mode(str, Enum):
    CACHED = "cached"
    ENCODER = "encoder"
    LORA = "lora"


ADAPTERS = ("lora", "lora_plus")  # the attention configs that train adapters inside the encoder


def run_mode(cfg: DictConfig) -> Mode:
    if OmegaConf.select(cfg, "attention.name") in ADAPTERS:
        return Mode.LORA
    if not OmegaConf.select(cfg, "cache.enabled", default=True):
        return Mode.ENCODER
    return Mode.CACHED


def check_mode_options(cfg: DictConfig, mode: Mode) -> None:
    """Options that make sense in one mode only."""
    augment = OmegaConf.select(cfg, "augment.name", default="none")
    if mode is Mode.CACHED and augment != "none":
        raise DaamlabError(
            f"augment={augment} changes the raw inputs every epoch, which a feature cache cannot: "
            "train with cache.enabled=false, or use augment=none"
        )
    if mode is not Mode.CACHED and cfg.get("compile", False):
        raise DaamlabError(
            "compile=true compiles the head's forward on cached features; with the encoder in the "
            "loop (cache.enabled=false or LoRA) the encoder dominates: set compile=false"
        )
    if mode is Mode.LORA and (cfg.data.get("layers") is not None or cfg.cache.get("round_fp16")):
        raise DaamlabError(
            f"attention={cfg.attention.name} trains on the encoder's pooled last layer: "
            "leave data.layers=null and cache.round_fp16=false"
        )


def build(cfg: DictConfig, stage: str = "fit") -> tuple[FeatureDataModule, Classifier]:
    """The datamodule (its data loaded: a missing cache is built by global rank 0) and a fresh model."""
    mode = run_mode(cfg)
    check_mode_options(cfg, mode)
    dm = build_datamodule(cfg, cached=mode is Mode.CACHED)
    if rank_zero_only.rank == 0:  # the other DDP ranks start after it (or run extract.py first)
        dm.prepare_data()
    dm.setup(stage)
    # the demos train their small heads on one thread (configs/modality/*_demo.yaml); extraction,
    # before this, and an encoder in the loop keep every core (cli.job_scope restores the count)
    if mode is Mode.CACHED and cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    return dm, build_model(cfg, mode, dm)


def build_model(cfg: DictConfig, mode: Mode, dm: FeatureDataModule) -> Classifier:
    plain = lambda node: OmegaConf.to_container(node, resolve=True)
    head: dict[str, Any] = {"num_classes": dm.num_classes, "loss": plain(cfg.loss), "optim": plain(cfg.optim)}
    if mode is Mode.CACHED:
        return Classifier(
            num_layers=dm.num_layers,
            dim=dm.dim,
            attention=plain(cfg.attention),
            decoder=plain(cfg.decoder),
            compile=cfg.get("compile", False),
            layer_widths=cached_layer_widths(dm),  # layers of different widths get a per-layer projection
            projection_dim=cfg.get("projection_dim"),
            **head,
        )
    common = {"encoder_cfg": plain(cfg.encoder), "encoder": dm.encoder, **head}
    if mode is Mode.LORA:  # adapters + a linear head on the pooled last layer
        return LoraClassifier(
            lora=plain(cfg.attention),
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
        attention=plain(cfg.attention),
        decoder=plain(cfg.decoder),
        **common,
    )
