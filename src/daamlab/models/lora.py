"""LoRA and LoRA+ baselines (attention=lora | lora_plus): HF peft adapters inside the encoder plus a
linear classifier on its pooled last layer, trained end to end on raw items (no feature cache).

A fair baseline, unlike the published one (docs/paper-vs-code.md, "LoRA"): peft's standard
alpha/r scaling, the classifier trained (LoRA+ included: it sits in peft's LoRA+ optimizer's base
group), the same data, folds, seeds, batch size, epochs, loss, metrics and metrics.json as the
attention heads. The head, metrics and pooling are the cached path's code: this is EncoderClassifier
with a differentiable encoder forward and an attention-free linear head on one layer.

Targets (`targets`) are roles, each mapped to the names the model's linear layers use:
query -> q_proj | query, key -> k_proj | key, value -> v_proj | value; any other entry is taken as
a literal module name. The paper's code adapts [query, value]; its text says [query, key].
A checkpoint holds the adapters and the head only; loading one rebuilds the frozen encoder from
its source and puts the adapters back.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from torch import nn

from daamlab.encoders.hf import HFEncoder
from daamlab.errors import DaamlabError
from daamlab.models.classifier import count_trainable
from daamlab.models.encoder_classifier import EncoderClassifier

ROLES = {"query": ("q_proj", "query"), "key": ("k_proj", "key"), "value": ("v_proj", "value")}
LORA_METHODS = ("lora", "lora_plus")  # attention names that select this module


def target_names(model: nn.Module, targets: list[str]) -> list[str]:
    """The module names (last path component) peft adapts: each role's names present in `model`."""
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    )
    names: list[str] = []
    for target in targets:
        found = [n for n in ROLES.get(target, (target,)) if n in linear]
        if not found:
            raise DaamlabError(
                f"attention.targets entry '{target}' matches no linear layer of {type(model).__name__} "
                f"(its linear layers are named {', '.join(linear)}); use query, key, value or one of those names"
            )
        names += found
    return names


def attention_through_modules(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_bias: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """WavLM's attention, computed by calling q/k/v/out_proj (so LoRA-wrapped modules take part).

    transformers' WavLMAttention hands the projections' *weights* to F.multi_head_attention_forward
    and never calls the modules, so adapters on them (peft's, or the published code's forward hooks)
    would do nothing. Same arithmetic: (x Wq^T + bq)/sqrt(hd) (x Wk^T + bk)^T + gated position bias,
    padded keys masked, softmax, dropout, @ (x Wv^T + bv), out_proj. Attention weights are not returned.
    """
    B, T, E = hidden_states.shape
    H = self.num_heads
    q, k, v = (
        m(hidden_states).view(B, T, H, E // H).transpose(1, 2)
        for m in (self.q_proj, self.k_proj, self.v_proj)
    )
    bias = position_bias.view(B, H, T, T)  # (B*H, T, T) -> (B, H, T, T), additive
    if attention_mask is not None:  # 1 = real frame
        bias = bias.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
    dropout = self.dropout if self.training else 0.0
    out = nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=dropout
    )  # (B, H, T, hd)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, E)), None


def route_attention_through_modules(model: nn.Module) -> int:
    """Patch every WavLM-style attention of `model` (see attention_through_modules); returns how many."""
    patched = 0
    for module in model.modules():
        if hasattr(module, "torch_multi_head_self_attention") and hasattr(module, "q_proj"):
            module.torch_multi_head_self_attention = MethodType(attention_through_modules, module)
            patched += 1
    return patched


class LoraClassifier(EncoderClassifier):
    def __init__(self, *, lora: dict[str, Any], **rest: Any) -> None:
        """`lora`: the attention config (name, r, alpha, dropout, targets, train_mode,
        gradient_checkpointing, and lr_ratio for lora_plus); `rest`: EncoderClassifier's arguments, the head on one layer."""
        super().__init__(**rest)
        from peft import LoraConfig, get_peft_model

        if not isinstance(self.encoder, HFEncoder):
            raise DaamlabError(
                f"attention={lora['name']} adapts a transformers model; encoder '{self.hparams.encoder_cfg.get('name')}' "
                "is not one (use encoder.type=hf, tiny or packaged_hf)"
            )
        r, alpha = lora["r"], lora["alpha"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 1 or not alpha > 0:
            raise DaamlabError(
                f"attention.r={r!r} must be a whole number >= 1 and attention.alpha={alpha!r} > 0"
            )
        if (
            lora["gradient_checkpointing"] and not lora["train_mode"]
        ):  # transformers checkpoints in train mode only
            raise DaamlabError(
                "attention.gradient_checkpointing=true needs attention.train_mode=true: transformers "
                "recomputes activations only in train mode, so in eval mode it would save no memory"
            )
        model = self.encoder.model
        route_attention_through_modules(model)
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,  # peft scales the update by alpha / r (use_rslora=False)
            lora_dropout=lora["dropout"],
            target_modules=target_names(model, list(lora["targets"])),
            bias="none",
        )
        self.backbone = get_peft_model(model, config)  # adapters injected into the encoder's model in place
        # Lightning keeps each submodule's mode: train mode turns on the encoder's own dropout (and
        # time masking for WavLM) while training, as HF fine-tuning does. LayerDrop stays off: a
        # skipped layer records no hidden state, and the pooling indexes hidden states by layer.
        self.backbone.train(bool(lora["train_mode"]))
        if getattr(model.config, "layerdrop", 0.0):
            model.config.layerdrop = 0.0
        if lora["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.adapters_checked = False
        self.lr_ratio: float | None = lora.get("lr_ratio")
        if lora["name"] == "lora_plus" and not (self.lr_ratio and self.lr_ratio >= 1):
            raise DaamlabError(
                f"attention.lr_ratio={self.lr_ratio!r} (LoRA+: lr of B / lr of A) must be >= 1"
            )

    def features(self, inputs: list[Any]) -> torch.Tensor:
        """Raw inputs -> (B, 1, d): the last of the encoder's layers, pooled, with gradients to the adapters."""
        if self.adapters_checked:
            return self.encoder.pooled(inputs)[:, -1:]
        return self._first_features(inputs)

    def _first_features(self, inputs: list[Any]) -> torch.Tensor:
        """The first forward also checks that every adapted module runs: a model that reads a
        projection's weight without calling it (as WavLM's attention did) would silently ignore LoRA."""
        from peft.tuners.lora import LoraLayer

        adapted = {name: m for name, m in self.backbone.named_modules() if isinstance(m, LoraLayer)}
        ran: set[str] = set()
        hooks = [m.register_forward_hook(lambda *_, n=n: ran.add(n)) for n, m in adapted.items()]
        try:
            x = self.encoder.pooled(inputs)[:, -1:]
        finally:
            for hook in hooks:
                hook.remove()
        idle = sorted(set(adapted) - ran)
        if idle:
            raise DaamlabError(
                f"{len(idle)} adapted modules never run in {type(self.encoder.model).__name__}'s forward "
                f"(e.g. {idle[0]}), so LoRA on them would change nothing; choose other attention.targets"
            )
        self.adapters_checked = True
        return x

    @property
    def param_counts(self) -> dict[str, int]:
        adapters = count_trainable(self.backbone)
        # `attention` is the method's own parameters, as for the heads; `total` includes the frozen encoder
        return {
            **super().param_counts,
            "attention": adapters,
            "adapters": adapters,
            "head": count_trainable(self.decoder),
        }

    def _frozen_keys(self, prefix: str = "") -> set[str]:
        frozen = {n for n, p in self.backbone.named_parameters() if not p.requires_grad}
        frozen |= {n for n, _ in self.backbone.named_buffers()}
        return {f"{prefix}backbone.{n}" for n in frozen}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Adapters + head (+ the head's buffers): the encoder's frozen weights come from its source."""
        state = super().state_dict(*args, **kwargs)
        for key in self._frozen_keys(kwargs.get("prefix", "")) & set(state):
            del state[key]
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = sorted(set(result.missing_keys) - self._frozen_keys())
        if strict and (missing or result.unexpected_keys):
            raise DaamlabError(
                f"the checkpoint does not fit this LoRA model (targets, r or head differ): missing "
                f"{missing[:4]}, unexpected {sorted(result.unexpected_keys)[:4]}"
            )
        return result

    def configure_optimizers(self):
        if self.lr_ratio is None:
            return super().configure_optimizers()
        from peft.optimizers import create_loraplus_optimizer

        opt = self.hparams.optim
        # groups: lora_B and 1-d weights at lr * ratio, everything else trainable (lora_A, the
        # classifier's weight) at lr; the classifier is trained, unlike the published LoRA+ runs
        optimizer = create_loraplus_optimizer(
            self,
            torch.optim.AdamW,
            lr=opt["lr"],
            loraplus_lr_ratio=self.lr_ratio,
            loraplus_weight_decay=opt["weight_decay"],
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=opt["plateau_factor"], patience=opt["plateau_patience"]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/acc"}}
