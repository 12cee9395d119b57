"""Occlusion importance per layer: a model-agnostic yardstick to hold the Importance Factor against.

For a trained head and each layer i, replace that layer's features by their training-set mean (the
same d-vector for every sample) and measure the validation set again:
    nll_increase[i] = NLL(occluded i) - NLL(clean)      mean negative log-likelihood, nats per row
    acc_drop[i]     = acc(clean) - acc(occluded i)      in accuracy points (0-1)
A layer the prediction relies on costs likelihood when its information is removed; a layer it
ignores costs nothing. It needs no gates, so it applies to every variant (mhsa, none, ...), and for
gated ones the rank correlation with the IF's per-layer mean says whether the IF ranks layers the
way the model uses them. The NLL increase is the primary measure (`layer_importance.npy`): it is
smooth where accuracy moves in steps of 1 / rows. Caveat: occlusion measures what one layer adds
given all others; two layers that carry the same information each look unimportant.

Integrated gradients (`ig_steps` > 0) are the second yardstick, with the same baseline: per layer,
    ig[i] = mean over rows of  sum_d (x - x̄)[i, d] * mean_k d log p(y | x̄ + a_k (x - x̄)) / dx[i, d]
with a_k = (k + 1/2) / steps (the midpoint rule). Unlike occlusion it splits the whole effect among the
layers (completeness: sum_i ig[i] = mean log p(y | x) - log p(y | x̄), up to the rule's error, which
the JSON records), so layers carrying the same information share it instead of each looking unused.

A run writes `layer_importance.npy` (N,), `layer_importance.json` (both occlusion measures, the clean
metrics, the integrated gradients and their completeness, the IF rank correlations) and
`layer_importance.png` (occlusion and integrated gradients beside the IF per layer).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from daamlab.importance import importance_factor
from daamlab.io import write_figure, write_npy, write_text
from daamlab.models.classifier import Classifier
from daamlab.models.encoder_classifier import EncoderClassifier

ARRAY = "layer_importance.npy"
SUMMARY = "layer_importance.json"
FIGURE = "layer_importance.png"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def if_per_layer(gates: np.ndarray) -> np.ndarray:
    """(N, d) averaged gates -> (N,) mean IF per layer (the IF ablation's ranking of layers)."""
    return importance_factor(gates).mean(axis=1)


@torch.no_grad()
def layer_means(loader: Iterable) -> torch.Tensor:
    """(N, d) mean of each layer's features over a loader (the training set), in float64."""
    total, count = None, 0
    for x, _ in loader:
        s = x.double().sum(0)  # (N, d)
        total = s if total is None else total + s
        count += x.shape[0]
    return (total / count).float()


@torch.no_grad()
def occlusion_importance(model: nn.Module, train_loader: Iterable, val_loader: Iterable) -> dict:
    """Per-layer NLL increase and accuracy drop when each layer is replaced by its training mean.

    `model` maps (B, N, d) features to logits (a daamlab Classifier). Returns a dict of lists and
    floats, ready for JSON. Costs N + 1 validation passes of the head."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mean = layer_means(train_loader).to(device)  # (N, d)
    N = mean.shape[0]
    nll = torch.zeros(N + 1, dtype=torch.float64)  # index N: the clean features
    hits = torch.zeros(N + 1, dtype=torch.float64)
    rows = 0
    for x, y in val_loader:
        x, y = x.to(device).float(), y.to(device)
        for i in range(N + 1):
            xi = x
            if i < N:
                xi = x.clone()
                xi[:, i] = mean[i]  # layer i carries no sample-specific information now
            logits = model(xi).float()
            nll[i] += nn.functional.cross_entropy(logits, y, reduction="sum").double().cpu()
            hits[i] += (logits.argmax(-1) == y).sum().double().cpu()
        rows += x.shape[0]
    model.train(was_training)
    nll, acc = nll / rows, hits / rows
    return {
        "measure": "occlusion by the training mean, on the validation split",
        "rows": rows,
        "base_nll": float(nll[N]),
        "base_acc": float(acc[N]),
        "nll_increase": (nll[:N] - nll[N]).tolist(),
        "acc_drop": (acc[N] - acc[:N]).tolist(),
    }


def integrated_gradients(model: nn.Module, train_loader: Iterable, val_loader: Iterable, steps: int) -> dict:
    """Per-layer integrated gradients of log p(true class) on the validation split, from the
    training-mean baseline (module docstring). Costs `steps` forward + backward passes of the head."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    base = layer_means(train_loader).to(device)  # (N, d)
    attribution = torch.zeros(base.shape[0], dtype=torch.float64)  # summed over rows
    gap, rows = 0.0, 0
    for x, y in val_loader:
        x, y = x.to(device).float(), y.to(device)
        delta = x - base  # (B, N, d)
        grads = torch.zeros_like(x)
        for k in range(steps):
            point = (base + (k + 0.5) / steps * delta).requires_grad_(True)
            with torch.enable_grad():
                logp = torch.log_softmax(model(point).float(), -1).gather(1, y[:, None]).sum()
                grads += torch.autograd.grad(logp, point)[0]
        attribution += (delta * grads / steps).sum(-1).sum(0).double().cpu()  # (N,)
        with torch.no_grad():
            ends = [
                torch.log_softmax(model(v).float(), -1).gather(1, y[:, None]).sum()
                for v in (x, base.expand_as(x))
            ]
        gap += float(ends[0] - ends[1])
        rows += x.shape[0]
    model.train(was_training)
    ig = attribution / rows
    return {
        "ig": ig.tolist(),
        "ig_steps": steps,
        "ig_sum": float(ig.sum()),  # completeness: close to ig_logp_gap
        "ig_logp_gap": gap / rows,  # mean log p(y | x) - log p(y | baseline)
    }


def plot_layer_importance(
    result: dict,
    path: Path,
    layers: Sequence[int] | None = None,
    gates: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Occlusion (NLL increase and accuracy drop) per layer, beside the IF's per-layer mean if gated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nll, acc = np.asarray(result["nll_increase"]), 100 * np.asarray(result["acc_drop"])
    n = len(nll)
    labels = [str(v) for v in (layers if layers is not None else range(n))]
    panels = 2 + ("ig" in result) + (gates is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 0.22 * n + 2.0), sharey=True)
    y = np.arange(n)
    axes[0].barh(y, nll, color="tab:red")
    axes[0].set_xlabel("validation NLL increase (nats)")
    axes[0].set_title("occlusion: NLL")
    axes[1].barh(y, acc, color="tab:orange")
    axes[1].set_xlabel("accuracy drop (points)")
    axes[1].set_title("occlusion: accuracy")
    if "ig" in result:
        axes[2].barh(y, result["ig"], color="tab:purple")
        axes[2].set_xlabel("contribution to log p(true class)")
        axes[2].set_title(f"integrated gradients ({result['ig_steps']} steps)")
    if gates is not None:
        per_layer = if_per_layer(gates)
        axes[-1].barh(y, per_layer, color="tab:green")
        axes[-1].set_xlim(0, 1)  # the IF's own range: small differences stay small
        axes[-1].set_xlabel("mean IF")
        axes[-1].set_title(f"IF (Spearman vs NLL: {spearman(per_layer, nll):+.2f})")
    for ax in axes:
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
    step = max(1, n // 12)
    axes[0].set_yticks(y[::step], labels[::step])
    axes[0].set_ylabel("layer")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(path, fig)
    plt.close(fig)


def save_layer_importance(
    out_dir: Path, model: nn.Module, datamodule, title: str = "", ig_steps: int = 0
) -> Path | None:
    """Occlusion importance (and integrated gradients with ig_steps > 0) of a trained head on cached
    layer features: writes layer_importance.npy, .json and .png into out_dir and returns the figure's
    path; None where the model does not take layer features (LoRA, an encoder in the loop)."""
    if not isinstance(model, Classifier) or isinstance(model, EncoderClassifier):
        return None  # the encoder runs inside the model: its batches are raw items, not layer features
    out_dir = Path(out_dir)
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    result = occlusion_importance(model, train, val)
    if ig_steps > 0:
        result |= integrated_gradients(model, train, val, ig_steps)
    layers = getattr(datamodule, "layers", None)
    result["layers"] = list(layers) if layers is not None else list(range(len(result["nll_increase"])))
    gates = model.best_gates.cpu().numpy() if getattr(model, "gated", False) else None
    if gates is not None:
        per_layer = if_per_layer(gates)
        result["if_per_layer"] = per_layer.tolist()
        measures = [
            ("spearman_if_nll", "nll_increase"),
            ("spearman_if_acc", "acc_drop"),
            ("spearman_if_ig", "ig"),
        ]
        for key, measure in [(k, m) for k, m in measures if m in result]:
            rho = spearman(per_layer, result[measure])
            result[key] = None if np.isnan(rho) else rho  # JSON has no nan
    write_npy(out_dir / ARRAY, np.asarray(result["nll_increase"], dtype=np.float32))
    write_text(out_dir / SUMMARY, json.dumps(result, indent=1) + "\n")
    plot_layer_importance(result, out_dir / FIGURE, result["layers"], gates, title)
    return out_dir / FIGURE
