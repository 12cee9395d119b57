"""End to end: a variants x folds sweep on cached features vs re-running the encoder every epoch.

The s3prl way (`cache.enabled=false` here) runs the frozen encoder on every training and validation
item of every epoch of every run; the cached way runs it once per item, then trains every run from
the memory-mapped cache. Running the whole uncached sweep takes hours on a CPU, so this measures its
parts through train.py's own code path, on a fresh cache directory, and adds them up:
  extraction      build_cache once (every item through the encoder), timed
  cached epoch    per variant: train(fold 1) for `--epochs` epochs from the cache, wall time / epochs
  uncached epoch  train(fold 1, cache.enabled=false) for `--epochs` epochs, wall time / epochs; its
                  batches are drawn at random, so each is padded to its longest clip (as s3prl's are)
Both epoch figures include the run's set-up, divided over the epochs: the cached side is charged the
more for it. Totals use the modality's own max_epochs for each of the variants x folds runs.

    python benchmarks/sweep.py [--modality speech_demo] [--variants daam,mhsa,gaussian,none] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import ROOT, machine, print_table
from hydra import compose, initialize_config_dir

from daamlab.features.extract import build_cache
from daamlab.training import train


def config(args, cache_dir: str, out_dir: str, *overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose(
            "train",
            [
                f"modality={args.modality}",
                f"paths.cache_dir={cache_dir}",
                f"paths.output_dir={out_dir}",
                "data.fold=1",
                "logger=none",
                "callbacks=none",
                "trainer.enable_progress_bar=false",
                "test=false",
                "ckpt_path=null",
                *overrides,
            ],
        )


def epoch_seconds(args, cache_dir: str, *overrides: str) -> float:
    threads = torch.get_num_threads()  # a demo's torch_threads narrows a cached run: undo it for the next
    with tempfile.TemporaryDirectory() as out:
        metrics = train(config(args, cache_dir, out, f"trainer.max_epochs={args.epochs}", *overrides))
    torch.set_num_threads(threads)
    return metrics["wall_time_s"] / args.epochs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="speech_demo")
    ap.add_argument("--variants", default="daam,mhsa,gaussian,none")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="epochs actually run per measured run")
    args = ap.parse_args()
    variants = args.variants.split(",")
    print(f"machine: {machine()}; modality {args.modality}")
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = config(args, cache_dir, cache_dir)
        full_epochs = int(cfg.trainer.max_epochs)
        start = time.perf_counter()
        build_cache(cfg)  # a fresh directory: every item goes through the encoder once
        extraction = time.perf_counter() - start
        print(
            f"extraction: {extraction:.0f} s", flush=True
        )  # each part as measured: a long run shows progress
        cached = {}
        for v in variants:
            cached[v] = epoch_seconds(args, cache_dir, f"attention={v}")
            print(f"cached epoch, {v}: {cached[v]:.2f} s", flush=True)
        uncached = epoch_seconds(args, cache_dir, "attention=daam", "cache.enabled=false")

    runs = args.folds * len(variants)
    cached_total = extraction + args.folds * full_epochs * sum(cached.values())
    uncached_total = runs * full_epochs * uncached  # the head's cost is small beside the encoder's
    rows = [
        ("extraction (once)", f"{extraction:.0f} s", ""),
        *((f"cached epoch, {v}", f"{t:.2f} s", "") for v, t in cached.items()),
        (
            "uncached epoch (encoder inside)",
            f"{uncached:.2f} s",
            f"{uncached / min(cached.values()):.0f}x a cached one",
        ),
        (
            f"sweep: {len(variants)} variants x {args.folds} folds x {full_epochs} epochs, cached",
            f"{cached_total / 60:.1f} min",
            "",
        ),
        ("same sweep, encoder every epoch (s3prl)", f"{uncached_total / 60:.1f} min", ""),
        ("ratio", f"{uncached_total / cached_total:.1f}x", "uncached / cached"),
    ]
    print_table(
        f"Sweep cost from parts measured in one process (runs of {args.epochs} epochs, fold 1)",
        rows,
        ("part", "time", "note"),
    )


if __name__ == "__main__":
    main()
