"""The paper's Importance Factor (IF) from validation-averaged DAAM gates, and the layer picks it drives.

IF = (DA - min(DA)) / (max(DA) - min(DA)), one global min-max over the whole (layer x feature) map
of the gates averaged over a validation pass (paper §1.5). The per-layer curve is each layer's share
of the summed gates, in percent: our reading of the paper's Figure 3 ("percentage contribution of
each layer"; the formula is not given). Both rank layers identically, since IF is an increasing
affine map of DA. `pick_layers` turns a run's IF into the layer subset of the paper's ablation
(Table 2e: the highest- vs the lowest-IF layers), read back from that run's `gates.npy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from daamlab.attention import gated_names
from daamlab.errors import DaamlabError
from daamlab.io import read_array, write_figure, write_npy

ARRAY = "importance.npy"
FIGURE = "importance.png"


def importance_factor(gates: np.ndarray) -> np.ndarray:
    """(N, d) averaged gates -> IF in [0, 1]; a constant map (no preference at all) gives zeros."""
    gates = np.asarray(gates, dtype=np.float64)
    if gates.ndim != 2:
        raise DaamlabError(f"gates must be a (layers, features) array, got shape {gates.shape}")
    lo, hi = gates.min(), gates.max()
    if hi == lo:
        return np.zeros_like(gates)
    return (gates - lo) / (hi - lo)


def layer_contribution(gates: np.ndarray) -> np.ndarray:
    """(N,) percent of the summed gates that each layer holds (sums to 100)."""
    per_layer = np.asarray(gates, dtype=np.float64).sum(axis=1)
    return 100.0 * per_layer / per_layer.sum()


def share_xlim(share: np.ndarray) -> tuple[float, float]:
    """The per-layer share axis: from 0 to at least twice the uniform share. Autoscaling stretched a
    4.16-4.17% spread across the panel, so rounding noise looked like a ranking of layers."""
    return 0.0, float(max(2 * 100.0 / len(share), 1.05 * np.max(share)))


def plot_importance(
    gates: np.ndarray, path: Path, layers: Sequence[int] | None = None, title: str = ""
) -> None:
    """IF heatmap (features on x, layers on y, as the paper's Figure 2) beside the per-layer curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imp = importance_factor(gates)
    share = layer_contribution(gates)
    n = imp.shape[0]
    labels = list(layers) if layers is not None else list(range(n))
    fig, (ax_map, ax_curve) = plt.subplots(
        1, 2, figsize=(10, 0.22 * n + 2.2), sharey=True, gridspec_kw={"width_ratios": [4, 1]}
    )
    im = ax_map.imshow(
        imp, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower", interpolation="nearest"
    )
    ax_map.set_xlabel("feature")
    ax_map.set_ylabel("layer")
    step = max(1, n // 12)
    ax_map.set_yticks(range(0, n, step), [str(labels[i]) for i in range(0, n, step)])
    ax_map.set_title(title or "Importance Factor")
    fig.colorbar(im, ax=ax_map, fraction=0.04, pad=0.01, label="IF")
    ax_curve.plot(share, range(n), marker="o", markersize=3)
    ax_curve.axvline(100.0 / n, color="grey", linestyle=":", linewidth=1)  # a uniform share, for reference
    ax_curve.set_xlim(*share_xlim(share))
    ax_curve.set_xlabel("layer share (%)")
    ax_curve.set_title(f"per layer ({share.min():.2f}-{share.max():.2f}%)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(path, fig)
    plt.close(fig)


def save_importance(
    out_dir: Path, gates: np.ndarray, layers: Sequence[int] | None = None, title: str = ""
) -> Path:
    """Write a run's IF array and its heatmap + per-layer curve; returns the figure's path."""
    write_npy(out_dir / ARRAY, importance_factor(gates).astype(np.float32))
    plot_importance(gates, out_dir / FIGURE, layers, title)
    return out_dir / FIGURE


def run_gates(run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """A finished run's averaged gates and the encoder layer index of each of their rows."""
    run_dir = Path(run_dir)
    path = run_dir / "gates.npy"
    if not path.is_file():
        raise DaamlabError(
            f"{path} not found: ablation.from_run must be the run directory of a finished run of a gated "
            f"attention ({', '.join(gated_names())}), which saves gates.npy"
        )
    gates = read_array(path)
    layers = None
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        layers = OmegaConf.select(OmegaConf.load(cfg_path), "data.layers")
    return gates, list(layers) if layers is not None else list(range(gates.shape[0]))


def pick_layers(
    gates: np.ndarray, pick: str, num_layers: int, layers: Sequence[int] | None = None
) -> list[int]:
    """The contiguous window of `num_layers` layers with the highest or lowest mean IF (the paper's
    ablation used single layers and 3-layer windows), as encoder layer indices."""
    if pick not in ("high", "low"):
        raise DaamlabError(f"ablation.pick must be 'high' or 'low', got {pick!r}")
    per_layer = importance_factor(gates).mean(axis=1)
    n = len(per_layer)
    if not 1 <= num_layers <= n:
        raise DaamlabError(f"ablation.num_layers={num_layers} must be between 1 and the run's {n} layers")
    window = np.convolve(per_layer, np.ones(num_layers) / num_layers, mode="valid")
    start = int(np.argmax(window) if pick == "high" else np.argmin(window))  # first window on ties
    labels = list(layers) if layers is not None else list(range(n))
    return [int(labels[i]) for i in range(start, start + num_layers)]


def layers_from_run(run_dir: str | None, pick: str, num_layers: int) -> list[int]:
    """`data.layers` of the IF ablation: the `pick` IF layers of a previous run (config resolver)."""
    if not run_dir:
        raise DaamlabError("the layer ablation needs ablation.from_run=<run dir of a finished DAAM run>")
    gates, layers = run_gates(Path(run_dir))
    return pick_layers(gates, str(pick), int(num_layers), layers)
