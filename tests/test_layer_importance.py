"""Occlusion importance per layer: it finds the toy's signal layers, and a run saves it beside the IF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from daamlab.build import build
from daamlab.layer_importance import (
    ARRAY,
    FIGURE,
    SUMMARY,
    integrated_gradients,
    occlusion_importance,
    save_layer_importance,
    spearman,
)

SIGNAL = [4, 7, 10]  # configs/data/toy.yaml: the class lives only in these layers


def fitted(compose, attention: str, epochs: int = 4):
    """A head fitted on the toy features by a plain Adam loop (seconds; no Trainer needed here)."""
    cfg = compose(["modality=toy", f"attention={attention}", "decoder=linear", "data.batch_size=100"])
    with open_dict(cfg):
        cfg.data.num_train, cfg.data.num_test = 1500, 400
    torch.manual_seed(0)
    dm, model = build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, dm


@pytest.mark.parametrize("attention", ["none", "daam"])
def test_occlusion_finds_the_toy_signal_layers(compose, attention):
    model, dm = fitted(compose, attention)
    result = occlusion_importance(model, dm.train_dataloader(), dm.val_dataloader())
    assert result["base_acc"] > 0.45 and result["rows"] == 400
    nll = np.array(result["nll_increase"])
    assert sorted(np.argsort(-nll)[:3].tolist()) == SIGNAL
    others = np.delete(nll, SIGNAL)
    assert nll[SIGNAL].min() > 10 * max(others.max(), 1e-3)  # far apart, not a near tie
    assert np.array(result["acc_drop"])[SIGNAL].min() > 0.05
    assert model.training  # the model's mode is restored


def test_integrated_gradients_are_complete_and_find_the_toy_signal_layers(compose):
    model, dm = fitted(compose, "none")
    result = integrated_gradients(model, dm.train_dataloader(), dm.val_dataloader(), steps=32)
    ig = np.array(result["ig"])
    assert ig.shape == (24,) and sorted(np.argsort(-ig)[:3].tolist()) == SIGNAL
    # the distractor layers' share is small (and negative: the head fits some of their noise)
    assert ig[SIGNAL].min() > 5 * np.abs(np.delete(ig, SIGNAL)).mean()
    # completeness: the layers' attributions add up to log p(y | x) - log p(y | baseline)
    assert result["ig_sum"] == pytest.approx(result["ig_logp_gap"], rel=0.01)
    assert result["ig_logp_gap"] > 0.1 and model.training  # the features tell more than their mean


def test_integrated_gradients_give_an_unused_layer_exactly_nothing():
    class LayerTwoOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, 2)
            return self.out(torch.tanh(x[:, 2]))

    torch.manual_seed(0)
    x, y = torch.randn(40, 5, 3), torch.randint(0, 2, (40,))
    loader = [(x[:20], y[:20]), (x[20:], y[20:])]
    result = integrated_gradients(LayerTwoOnly(), loader, loader, steps=64)
    ig = np.array(result["ig"])
    assert np.all(np.delete(ig, 2) == 0.0) and ig[2] != 0.0
    assert result["ig_sum"] == pytest.approx(result["ig_logp_gap"], rel=1e-3)


def test_a_run_saves_occlusion_beside_the_if(compose, tmp_path):
    model, dm = fitted(compose, "daam", epochs=1)
    with torch.no_grad():  # gates whose per-layer mean is known: layer i's mean IF rises with i
        model.best_gates.copy_(
            torch.linspace(0.1, 0.9, 24)[:, None].expand(24, 64) + 0.01 * torch.rand(24, 64)
        )
    fig = save_layer_importance(tmp_path, model, dm, "toy", ig_steps=4)
    assert fig == tmp_path / FIGURE and fig.stat().st_size > 0
    saved = json.loads((tmp_path / SUMMARY).read_text())
    nll = np.load(tmp_path / ARRAY)
    assert nll.shape == (24,) and np.allclose(nll, saved["nll_increase"], atol=1e-6)
    assert saved["layers"] == list(range(24)) and len(saved["if_per_layer"]) == 24
    assert saved["spearman_if_nll"] == pytest.approx(spearman(range(24), saved["nll_increase"]), abs=0.05)
    assert len(saved["ig"]) == 24 and saved["ig_steps"] == 4
    assert saved["spearman_if_ig"] == pytest.approx(spearman(range(24), saved["ig"]), abs=0.05)


def test_if_share_axis_starts_at_zero_and_spans_twice_the_uniform_share():
    from daamlab.importance import layer_contribution, share_xlim

    share = layer_contribution(np.full((24, 8), 0.5) + np.linspace(0, 1e-3, 24)[:, None])  # 4.16-4.17 %
    assert share_xlim(share) == (0.0, pytest.approx(2 * 100 / 24))  # the spread stays visibly small
    assert share_xlim(np.array([70.0, 10.0, 10.0, 10.0]))[1] == pytest.approx(
        73.5
    )  # a dominant layer still fits


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _run(path, attention, fold, gates, occlusion, ig=None):
    """A finished run directory with the files the report reads (as training writes them)."""
    import yaml

    path.mkdir(parents=True)
    tags = ["experiment:paper_iemocap"]
    cfg = {
        "attention": {"name": attention},
        "data": {"name": "iemocap", "fold": fold, "layers": None},
        "seed": 1,
        "tags": tags,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = {
        "status": "complete",
        "attention": attention,
        "data": "iemocap",
        "fold": fold,
        "seed": 1,
        "tags": tags,
    }
    metrics |= {
        "best_val_acc": 0.6,
        "test": {"acc": 0.6},
        "params": {"attention": 1, "trainable": 2, "total": 2},
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    if gates is not None:
        np.save(path / "gates.npy", gates)
    np.save(path / ARRAY, occlusion)
    if ig is not None:
        (path / SUMMARY).write_text(json.dumps({"ig": ig.tolist()}))


def test_report_shows_if_vs_occlusion_for_every_gated_run(tmp_path):
    from daamlab.report import build_report

    rising = np.linspace(0.2, 0.8, 24)[:, None].repeat(8, 1)  # mean IF rises with the layer
    occ = np.linspace(0.0, 1.0, 24).astype(np.float32)
    falling = occ[::-1].copy()  # integrated gradients that rank the layers the other way round
    _run(tmp_path / "runs" / "daam_f1", "daam", 1, rising, occ, falling)  # the IF agrees with occlusion: +1
    _run(tmp_path / "runs" / "daam_f2", "daam", 2, rising, occ, falling)
    _run(tmp_path / "runs" / "daam_f3", "daam", 3, rising[::-1].copy(), occ)  # it disagrees: -1
    _run(tmp_path / "runs" / "mhsa_f1", "mhsa", 1, None, occ)  # no gates: no IF to compare
    md = build_report([tmp_path / "runs"], tmp_path / "out", paper_path=None).read_text()
    section = md[md.index("## Importance Factor vs occlusion") :]
    assert (
        "| paper_iemocap · iemocap | daam | +0.33 ± 0.94 | +1.00, +1.00, -1.00 | 23, 22, 21 | 23, 22, 21 "
        "| -1.00 ± 0.00 | 0, 1, 2 |" in section  # IG: the two runs that computed it
    )
    assert "| mhsa |" not in section
    assert (tmp_path / "out" / "if_vs_occlusion_paper_iemocap-iemocap_daam.png").stat().st_size > 0
