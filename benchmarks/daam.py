"""DAAM forward+backward: fused (attention/fused.py) vs the plain reference, at the paper's shapes.

Four variants run interleaved in one process: plain eager (the reference), fused eager (the custom
autograd Function), plain compiled and fused compiled (`torch.compile`, what `compile=true` runs).
Prints median ms per forward+backward, the speed-up over the plain reference, the activation memory
autograd keeps (bytes saved for backward / bytes of x), and the largest difference from the reference.

    python benchmarks/daam.py [--rounds 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved, machine, print_table

from daamlab.attention import build_attention

SHAPES = [(32, 24, 1024, 8), (32, 24, 1024, 1), (32, 40, 5120, 8), (32, 40, 5120, 1)]  # B, N, d, g


def saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def fwd_bwd(m: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor):
    def run() -> None:
        x.grad = None
        m.zero_grad(set_to_none=True)
        m(x).backward(gy)

    return run


def measure(B: int, N: int, d: int, g: int, rounds: int, inner: int, dev: str) -> tuple[str, ...]:
    torch.manual_seed(0)
    plain = build_attention("daam", N, d, num_heads=g, fused=False).to(dev)
    fused = build_attention("daam", N, d, num_heads=g, fused=True).to(dev)
    with torch.no_grad():  # off the init, so delta and xi both matter
        plain.delta.normal_(0, 0.3)
        plain.xi.uniform_(0.5, 3.0)
    fused.load_state_dict(plain.state_dict())
    modules = {
        "plain": plain,
        "fused": fused,
        "plain+compile": torch.compile(plain),
        "fused+compile": torch.compile(fused),
    }
    x = (torch.randn(B, N, d, device=dev) * 2 + 1).requires_grad_()
    gy = torch.randn(B, N, d, device=dev)

    # equal results: output and gradients (x, delta, xi) of each variant vs the plain reference,
    # as the largest difference relative to the reference tensor's largest magnitude
    results = {}
    for name, m in modules.items():
        fwd_bwd(m, x, gy)()
        results[name] = [m(x).detach(), x.grad, m.delta.grad, m.xi.grad]
    rel = max(
        ((a - b).abs().max() / b.abs().max()).item()
        for name in modules
        for a, b in zip(results[name], results["plain"], strict=True)
    )

    steps = {n: fwd_bwd(m, x, gy) for n, m in modules.items()}
    times = interleaved(steps, rounds=rounds, inner=inner, device=dev)
    x_bytes = x.numel() * x.element_size()
    mem = {n: saved_bytes(lambda m=modules[n]: m(x)) / x_bytes for n in ("plain", "fused")}
    base = times["plain"]
    return (
        f"B={B} N={N} d={d} g={g}",
        *(f"{t * 1e3:.1f} ms ({base / t:.2f}x)" for t in times.values()),
        f"{mem['plain']:.1f}x / {mem['fused']:.1f}x",
        f"{rel:.0e}",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"machine: {machine()}; device {args.device}")
    rows = [measure(*shape, args.rounds, args.inner, args.device) for shape in SHAPES]
    print_table(
        f"DAAM forward+backward, median of {args.rounds} interleaved rounds (speed-up vs plain)",
        rows,
        (
            "shape",
            "plain",
            "fused",
            "plain+compile",
            "fused+compile",
            "saved for backward, plain / fused (x = 1)",
            "max rel. diff",
        ),
    )


if __name__ == "__main__":
    main()
