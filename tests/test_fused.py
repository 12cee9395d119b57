"""The fused DAAM gate against the plain reference (`fused=False`): outputs, gates, every gradient, memory."""

from __future__ import annotations

import pytest
import torch

from daamlab.attention import build_attention
from daamlab.attention.fused import FusedDAAMGate, fused_daam


def pair(name: str, N: int, d: int, dtype=torch.float32, **cfg):
    """The same module twice, fused and plain, with delta and xi moved off their init."""
    torch.manual_seed(0)
    fused = build_attention(name, N, d, fused=True, **cfg).to(dtype)
    plain = build_attention(name, N, d, fused=False, **cfg).to(dtype)
    daam = fused.daam if name == "gq_daam" else fused
    if daam.delta.requires_grad:
        with torch.no_grad():
            daam.delta.normal_(0, 0.3)
            daam.xi.uniform_(0.5, 3.0)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def grads(m: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor, gw: torch.Tensor | None) -> list:
    """d/d(x, every parameter) of <y, gy> (+ <gates, gw>): exercises both outputs' backward paths."""
    y, w = m(x, return_gates=True)
    loss = (y * gy).sum() + ((w * gw).sum() if gw is not None else 0)
    params = [p for p in m.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, [x, *params]))


@pytest.mark.parametrize("name,g", [("daam", 8), ("daam_v2", 1), ("gaussian", 8), ("daam", 4)])
def test_fused_outputs_and_gates_equal_the_reference(name, g):
    fused, plain = pair(name, 24, 48, num_heads=g)
    x = torch.randn(5, 24, 48) * 3 + 1
    (y1, w1), (y2, w2) = fused(x, return_gates=True), plain(x, return_gates=True)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w1, w2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused(x), y2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,g", [("daam", 8), ("daam_v2", 1), ("gaussian", 8)])
@pytest.mark.parametrize("use_gates", [False, True])
def test_fused_gradients_equal_the_reference(name, g, use_gates):
    fused, plain = pair(name, 24, 32, torch.float64, num_heads=g)
    x = (torch.randn(4, 24, 32, dtype=torch.float64) * 3 + 1).requires_grad_()
    gy = torch.randn_like(x)
    gw = torch.randn_like(x) if use_gates else None
    got, want = grads(fused, x, gy, gw), grads(plain, x, gy, gw)
    assert len(got) == (1 if name == "gaussian" else 3)  # x, delta, xi; gaussian: x only
    for a, b in zip(got, want, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_float32_gradients_equal_the_reference():
    fused, plain = pair("daam", 24, 64)
    x = (torch.randn(8, 24, 64) * 2).requires_grad_()
    gy = torch.randn_like(x)
    for a, b in zip(grads(fused, x, gy, None), grads(plain, x, gy, None), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gq_daam_fused_equals_plain_and_trains_its_density():
    fused, plain = pair("gq_daam", 24, 32, torch.float64, num_heads=8, embed_dim=64)
    x = torch.randn(3, 24, 32, dtype=torch.float64).requires_grad_()
    gy = torch.randn(3, 24, 64, dtype=torch.float64)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    got, want = grads(fused, x, gy, None), grads(plain, x, gy, None)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert got[1].shape == fused.daam.delta.shape and got[1].abs().sum() > 0  # delta's gradient


def test_gradcheck_of_the_autograd_function():
    torch.manual_seed(1)
    xh = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)  # (B, g, n, d)
    delta = (torch.randn(3, 1, 5, dtype=torch.float64) * 0.3).requires_grad_()
    xi = torch.empty(3, 1, 5, dtype=torch.float64).uniform_(0.5, 3.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: FusedDAAMGate.apply(*a), (xh, delta, xi))
    assert torch.autograd.gradcheck(lambda *a: FusedDAAMGate.apply(*a)[0], (xh, delta, xi))
    assert torch.autograd.gradcheck(lambda *a: FusedDAAMGate.apply(*a)[1], (xh, delta, xi))


def test_constant_layers_give_the_reference_gradient():
    """var = 0 inside a head: |.| has no slope there; both paths must agree (torch's sign(0) = 0)."""
    fused, plain = pair("daam", 24, 8, torch.float64)
    x = torch.randn(2, 24, 8, dtype=torch.float64)
    x[:, :3] = x[:, :1]  # head 0: three equal layers
    x.requires_grad_()
    gy = torch.randn_like(x)
    got, want = grads(fused, x, gy, None), grads(plain, x, gy, None)
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_fused_saves_a_fraction_of_the_reference_memory():
    fused, plain = pair("daam_v2", 24, 256)
    x = torch.randn(16, 24, 256, requires_grad=True)
    x_bytes = x.numel() * 4
    got, want = saved_bytes(lambda: fused(x)), saved_bytes(lambda: plain(x))
    assert got < 1.2 * x_bytes  # x, plus (B, 1, 1, d) statistics
    assert want > 5 * x_bytes  # what plain autograd keeps
    y, w = fused_daam(x, fused.delta, fused.xi)
    assert y.shape == w.shape == x.shape


@pytest.mark.slow
def test_compiled_fused_equals_the_reference():
    fused, plain = pair("daam", 24, 32, num_heads=8)
    compiled = torch.compile(fused)
    x = (torch.randn(6, 24, 32) * 2).requires_grad_()
    gy = torch.randn_like(x)
    torch.testing.assert_close(compiled(x), plain(x), rtol=1e-5, atol=1e-5)
    got, want = grads(compiled, x, gy, None), grads(plain, x, gy, None)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
