"""Per-layer projection for layers of different widths (EfficientNet blocks): shapes, padding, counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from daamlab.errors import DaamlabError
from daamlab.features.featureset import FeatureSet
from daamlab.models.classifier import Classifier
from daamlab.models.projection import LayerProjection, cached_layer_widths, needs_projection

WIDTHS = [4, 6, 6, 10]


def padded_batch(widths: list[int], batch: int = 3, pad_value: float = 0.0) -> torch.Tensor:
    x = torch.full((batch, len(widths), max(widths)), pad_value)
    for k, w in enumerate(widths):
        x[:, k, :w] = torch.randn(batch, w)
    return x


def test_projection_reads_only_each_layers_real_width():
    torch.manual_seed(0)
    projection = LayerProjection(WIDTHS, dim=8)
    x = padded_batch(WIDTHS)
    y = projection(x)
    assert y.shape == (3, 4, 8)
    garbage = x.clone()
    for k, w in enumerate(WIDTHS):
        garbage[:, k, w:] = 1e6  # whatever sits in the padding never reaches the output
    assert torch.equal(projection(garbage), y)
    for k, layer in enumerate(projection.layers):
        assert torch.allclose(y[:, k], layer(x[:, k, : WIDTHS[k]]))
    assert sum(p.numel() for p in projection.parameters()) == sum(w * 8 + 8 for w in WIDTHS)


def test_projection_only_when_widths_differ():
    assert needs_projection(WIDTHS)
    assert not needs_projection([8, 8, 8]) and not needs_projection(None)
    with pytest.raises(DaamlabError, match="must be >= 1"):
        LayerProjection([4, 0], dim=8)


def head(**kwargs) -> Classifier:
    return Classifier(
        num_layers=4,
        dim=10,
        num_classes=3,
        attention={"name": "daam", "num_heads": 2},
        decoder={"name": "linear"},
        loss={"name": "ce"},
        optim={"lr": 1e-3, "weight_decay": 0.0, "plateau_factor": 0.1, "plateau_patience": 10},
        **kwargs,
    )


def test_classifier_projects_ragged_layers_and_counts_the_projection():
    model = head(layer_widths=WIDTHS, projection_dim=8)
    logits, gates = model(padded_batch(WIDTHS), return_gates=True)
    assert logits.shape == (3, 3) and gates.shape == (3, 4, 8)  # the attention works at the common width
    counts = model.param_counts
    assert counts["projection"] == sum(w * 8 + 8 for w in WIDTHS)
    assert counts["attention"] == 2 * 2 * 8
    assert counts["trainable"] == counts["projection"] + counts["attention"] + (4 * 8 * 3 + 3)
    widest = head(layer_widths=WIDTHS)  # projection_dim null: the widest layer
    assert widest.projection.out_dim == 10 and widest.best_gates.shape == (4, 10)
    uniform = head(layer_widths=[10, 10, 10, 10])
    assert uniform.param_counts["projection"] == 0


def test_cached_layer_widths_follow_the_layer_subset():
    data = FeatureSet("x", ["a"], {}, info={"encoder": {"layer_widths": WIDTHS}})
    assert cached_layer_widths(SimpleNamespace(data=data, layers=None)) == WIDTHS
    assert cached_layer_widths(SimpleNamespace(data=data, layers=[3, 0])) == [10, 4]
    plain = FeatureSet("x", ["a"], {}, info={"encoder": {"type": "hf"}})
    assert cached_layer_widths(SimpleNamespace(data=plain, layers=None)) is None
