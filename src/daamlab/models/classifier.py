"""Classifier: attention variant -> decoder -> logits, trained on cached layer features.

Tracks the paper's metric (best validation accuracy over epochs) plus macro-F1 and unweighted
accuracy (mean per-class recall). For DAAM-family heads it averages the gates over each validation
pass and keeps the average of the best epoch (`best_gates`, (N, d)): the Importance Factor's input.
The published code accumulated gates over every validation pass ever run; ours resets per epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from daamlab.attention import build_attention, is_gated
from daamlab.models.decoder import build_decoder
from daamlab.models.losses import build_loss
from daamlab.models.projection import LayerProjection, needs_projection
from daamlab.record import RunDiverged


class GateMean(Metric):
    """Mean gate over the validation set, summed across processes under DDP."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, gates: torch.Tensor) -> None:  # (B, N, d)
        self.total += gates.detach().sum(0, dtype=torch.float64)
        self.count += gates.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Classifier(L.LightningModule):
    def __init__(
        self,
        *,
        num_layers: int,
        dim: int,
        num_classes: int,
        attention: dict[str, Any],
        decoder: dict[str, Any],
        loss: dict[str, Any],
        optim: dict[str, Any],
        layer_widths: list[int] | None = None,
        projection_dim: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # layers of different widths (CNN blocks): project each to a common width first (projection.py)
        self.projection: nn.Module = nn.Identity()
        if needs_projection(layer_widths):
            self.projection = LayerProjection(layer_widths, projection_dim or max(layer_widths))
            dim = self.projection.out_dim
        att = dict(attention)
        self.attention_name = att.pop("name")
        self.attention = build_attention(self.attention_name, num_layers, dim, **att)
        dec = dict(decoder)
        self.decoder = build_decoder(
            dec.pop("name"), self.attention.out_layers, self.attention.out_dim, num_classes, **dec
        )
        self.criterion = build_loss(**loss)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "uar": MulticlassAccuracy(num_classes, average="macro"),  # unweighted accuracy
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # buffers, so a checkpoint (and a resumed run) carries the best so far
        self.register_buffer("best_val_acc", torch.tensor(-1.0))
        self.register_buffer("best_epoch", torch.tensor(-1))
        self.gated = is_gated(self.attention)  # the module's class says whether it returns gates
        if self.gated:
            self.val_gates = GateMean((num_layers, dim))
            self.register_buffer("best_gates", torch.zeros(num_layers, dim))
        if compile:  # torch.compile of forward, in place: state_dict keys and checkpoints are unchanged
            self.compile()

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        x = self.projection(x.float())  # (B, N, d); cached batches arrive as float16, widened here
        if return_gates:
            y, gates = self.attention(x, return_gates=True)
            return self.decoder(y), gates
        return self.decoder(self.attention(x))

    @property
    def param_counts(self) -> dict[str, int]:
        return {
            "attention": count_trainable(self.attention),
            "projection": count_trainable(self.projection),
            "trainable": count_trainable(self),
            "total": sum(p.numel() for p in self.parameters()),
        }

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("train/loss")
        if loss is not None and not torch.isfinite(loss):  # a diverged run is failed, never complete
            raise RunDiverged(
                f"non-finite training loss at epoch {self.current_epoch}: the run diverged; "
                "lower optim.lr (or check the features for NaN/inf)"
            )

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if self.gated:
            logits, gates = self(x, return_gates=True)
            self.val_gates.update(gates)
        else:
            logits = self(x)
        self.log("val/loss", self.criterion(logits, y), on_step=False, on_epoch=True, sync_dist=True)
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = values["val/acc"]
        if not self.trainer.sanity_checking and acc > self.best_val_acc:  # strict, like ModelCheckpoint
            self.best_val_acc.copy_(acc)
            self.best_epoch.fill_(self.current_epoch)
            if self.gated:
                self.best_gates.copy_(self.val_gates.compute())
        if self.gated:
            self.val_gates.reset()
        self.log_dict(values, sync_dist=True)  # already reduced by torchmetrics; this only silences DDP
        self.log("val/acc_best", self.best_val_acc, prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.test_probs: list[torch.Tensor] = []  # (B, C) per batch, in the test loader's order

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("test/loss", self.criterion(logits, y), on_step=False, on_epoch=True, sync_dist=True)
        self.test_metrics.update(logits, y)
        self.test_probs.append(logits.detach().float().softmax(-1).cpu())  # -> predictions.csv

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self):
        opt = self.hparams.optim
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=opt["lr"], weight_decay=opt["weight_decay"])
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=opt["plateau_factor"], patience=opt["plateau_patience"]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/acc"}}
