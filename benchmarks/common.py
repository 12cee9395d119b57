"""Shared by the benchmarks: interleaved timing (medians over rounds) and the machine's name.

Shared machines drift, so compared variants run round-robin in one process: every round times each
variant once, and ratios are taken between medians over the rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository, for its configs/


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads){gpu}"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int,
    inner: int = 1,
    device: str = "cpu",
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per call of each variant; each round runs every variant `inner` times in turn."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
