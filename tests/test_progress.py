"""Long stages report progress often: extraction per encoder batch (not per part of 256 items)."""

from __future__ import annotations

import torch

from daamlab.features.extract import encode_part


def test_extraction_reports_every_batch():
    class Ones:
        num_layers, dim = 2, 3

        def encode(self, inputs):
            return torch.ones(len(inputs), 2, 3)

    moved: list[int] = []
    out = encode_part(Ones(), ["a", "bb", "ccc", "d", "ee"], batch_size=2, on_batch=moved.append)
    assert moved == [2, 2, 1] and out.shape == (5, 2, 3)
