"""Throughput switches change speed, not numbers: fp16 batches, channels-last decoder, compiled classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daamlab.build import build
from daamlab.models.classifier import Classifier
from daamlab.models.decoder import DATDecoder


def test_cached_batches_ship_as_stored_and_the_model_widens_them(compose, tmp_path):
    cfg = compose(
        [
            "data=synthetic",
            "data.kind=image",
            "data.num_train=12",
            "data.num_test=4",
            "encoder=tiny_beit",
            "encoder.device=cpu",
            "attention=daam_v2",
            f"paths.cache_dir={tmp_path}",
        ]
    )
    dm, model = build(cfg)  # extracts the float16 cache
    train = dm.train_set
    index = [5, 0, 3]
    x, y = train.__getitems__(index)
    rows = np.sort(train.rows[index])
    assert x.dtype == torch.float16  # half the bytes to pin and copy; no host-side conversion
    np.testing.assert_array_equal(x.numpy(), train.split.features[rows])
    np.testing.assert_array_equal(y.numpy(), train.split.labels[rows])
    model.eval()
    torch.testing.assert_close(model(x), model(x.float()), rtol=0, atol=0)


def test_channels_last_decoder_equals_the_default_layout():
    torch.manual_seed(0)
    plain = DATDecoder(num_layers=6, dim=64, num_classes=3, channels=16)
    nhwc = DATDecoder(num_layers=6, dim=64, num_classes=3, channels=16, channels_last=True)
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(5, 6, 64, requires_grad=True)
    y1, y2 = plain(x), nhwc(x)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(y1.square().sum(), [x, plain.conv1.weight])
    g2 = torch.autograd.grad(y2.square().sum(), [x, nhwc.conv1.weight])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def classifier(**kw) -> Classifier:
    return Classifier(
        num_layers=6,
        dim=16,
        num_classes=3,
        attention={"name": "daam", "num_heads": 2},
        decoder={"name": "dat", "channels": 8},
        loss={"name": "ce"},
        optim={"lr": 1e-3, "weight_decay": 0.0, "plateau_factor": 0.1, "plateau_patience": 1},
        **kw,
    )


@pytest.mark.slow  # importing dynamo alone takes seconds
def test_compile_keeps_checkpoint_keys():
    plain, compiled = classifier(), classifier(compile=True)
    assert compiled._compiled_call_impl is not None and plain._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    compiled.load_state_dict(plain.state_dict())
