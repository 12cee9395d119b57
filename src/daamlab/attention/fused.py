"""Fused DAAM: the gate's forward and backward without the intermediates autograd would keep.

Plain autograd over `DAAM.gates` keeps about eight (B, N, d)-sized tensors alive between forward and
backward (x^2, x - mu, z, z^2, w, ...). This custom autograd Function saves x and three per-group
statistics, (B, g, 1, d): mu, r = 1/sqrt(|E[x^2] - mu^2| + 1e-8 + 1e-5) and the sign of
E[x^2] - mu^2; backward recomputes z and w. The gradient, written out (n = layers per head, sums over
the n layers of a group, gw = the gradient reaching the gates, gy * x from y = x * w):

    gz     = gw * w * (-z / xi)                      gxi = sum_{B,n}(gw * w * z^2) / (2 xi^2)
    S      = sum_n(gz) * r                           gdelta = -sum_B(S)
    gs2    = sign * sum_n(gz * (x - mu - delta)) * (-r^3 / 2)      (the gradient reaching E[x^2])
    gx     = gy * w + gz * r + (2 * gs2 * (x - mu) - S) / n

Both kernels work in a few full-size buffers updated in place (fewer passes over memory, no fresh
large allocations), so the Function is faster than plain autograd even eagerly; under `torch.compile`
(the `compile` config key) dynamo traces it and inductor fuses forward and backward into a few loops.
benchmarks/daam.py measures both.
"""

from __future__ import annotations

import torch

VAR_FLOOR = 1e-8  # added after |var| (Algorithm 1, line 6)
NORM_EPS = 1e-5  # inside the square root (Algorithm 1, line 8)
XI_FLOOR = 1e-3  # the smallest xi a gate uses: exp(-z^2 / (2 xi)) is a gate in (0, 1] only while xi > 0


def floor_xi(xi: torch.Tensor) -> torch.Tensor:
    """xi as the gates use it: at least XI_FLOOR, whatever an optimiser step left in the parameter.

    Not in the paper, which keeps xi positive only by its initialisation (2) and small learning rates:
    xi = 0 gives NaN (0/0 at z = 0), xi < 0 gates above 1 (exp of a positive number). The floor is a
    straight-through clamp: its value is max(xi, XI_FLOOR), its gradient is that of xi itself, so a
    parameter pushed below the floor still gets the gradient that can bring it back (a plain clamp's
    would be zero there). Above the floor it is xi exactly: the gates and gradients of every run with
    xi >= XI_FLOOR are the published ones."""
    return xi + (xi.clamp(min=XI_FLOOR) - xi).detach()


def gate_forward(
    xh: torch.Tensor, delta: torch.Tensor, xi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """xh: (B, g, n, d); delta, xi: (g, 1, d) -> y, w: (B, g, n, d); mu, r, sign: (B, g, 1, d).

    Full-size work reuses one buffer in place: large fresh allocations (page faults) and extra passes
    over memory are what an eager element-wise chain costs on CPU."""
    mu = xh.mean(dim=2, keepdim=True)
    w = xh.square()
    raw_var = w.mean(dim=2, keepdim=True) - mu.square()  # E[x^2] - mu^2, as published
    r = torch.rsqrt(raw_var.abs() + (VAR_FLOOR + NORM_EPS))
    torch.sub(xh, mu + delta, out=w)  # the buffer now holds x - (mu + delta)
    w.mul_(r).square_().mul_(-0.5 / xi).exp_()  # exp(-z^2 / (2 xi))
    return xh * w, w, mu, r, raw_var.sign()


def gate_backward(
    gy: torch.Tensor,
    gw_out: torch.Tensor | None,
    xh: torch.Tensor,
    mu: torch.Tensor,
    r: torch.Tensor,
    sign: torch.Tensor,
    delta: torch.Tensor,
    xi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for xh (B, g, n, d), delta and xi (g, 1, d), from gy (and gw_out when the gates are used).

    Three full-size buffers, updated in place; sum_n(gz * (x - mu - delta)) is sum_n(gz * z) / r."""
    n = xh.shape[2]
    z = torch.sub(xh, mu + delta).mul_(r)  # (B, g, n, d)
    w = z.square().mul_(-0.5 / xi).exp_()
    gz = torch.mul(gy, xh)  # the gradient reaching w ...
    if gw_out is not None:
        gz.add_(gw_out)
    gz.mul_(w).mul_(z).mul_(-1 / xi)  # ... then reaching z
    gz_z = z.mul_(gz).sum(dim=2, keepdim=True)  # sum_n(gz * z): (B, g, 1, d); z is spent
    gxi = gz_z.sum(dim=0) * (-0.5 / xi)  # sum_{B,n}(gw * w * z^2) / (2 xi^2)
    sum_gz_r = gz.sum(dim=2, keepdim=True) * r  # (B, g, 1, d)
    gdelta = -sum_gz_r.sum(dim=0)
    gs2 = sign * gz_z * (-0.5 * r.square())  # the gradient reaching E[x^2]
    slope = 2 * gs2 / n  # gx = gy * w + gz * r + slope * (x - mu) - sum_gz_r / n
    gx = w.mul_(gy).addcmul_(gz, r).addcmul_(xh, slope)
    gx.sub_(slope * mu + sum_gz_r / n)
    return gx, gdelta, gxi


class FusedDAAMGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xh, delta, xi):
        y, w, mu, r, sign = gate_forward(xh, delta, xi)
        ctx.save_for_backward(xh, mu, r, sign, delta, xi)  # one (B, N, d) tensor, the rest per group
        ctx.set_materialize_grads(False)  # gw is None when the gates feed nothing differentiable
        return y, w

    @staticmethod
    def backward(ctx, gy, gw):
        xh, mu, r, sign, delta, xi = ctx.saved_tensors
        if gy is None:  # only the gates were used
            gy = torch.zeros_like(xh)
        gx, gdelta, gxi = gate_backward(gy, gw, xh, mu, r, sign, delta, xi)
        return gx, gdelta if ctx.needs_input_grad[1] else None, gxi if ctx.needs_input_grad[2] else None


def fused_daam(x: torch.Tensor, delta: torch.Tensor, xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (B, N, d); delta, xi: (g, d) -> y = x * w and the gates w, both (B, N, d); xi is floored (floor_xi)."""
    B, N, d = x.shape
    g = delta.shape[0]
    xi = floor_xi(xi)
    y, w = FusedDAAMGate.apply(x.reshape(B, g, N // g, d), delta[:, None], xi[:, None])  # (B, g, n, d)
    return y.reshape(B, N, d), w.reshape(B, N, d)
