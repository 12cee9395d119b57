"""Classifier training steps/s with the throughput switches vs the plain loop, and accuracy with them.

Part 1, speed: one optimiser step (forward, loss, backward, AdamW) of the Classifier at the paper's
speech/vision shapes (DAAM g=8 -> `dat`, 512 channels, N=24, d=1024, 4 classes), variants interleaved:
  plain            attention.fused=false, fp32, NCHW, eager (the published code's loop)
  +fused           attention.fused=true (the default)
  +channels_last   decoder.channels_last=true
  +bf16            trainer.precision=bf16-mixed (torch.autocast bf16, as Lightning runs it)
  +compile         compile=true
  all              every switch above
Part 2, accuracy: train.py's own path on modality=toy, plain vs all switches, over a few seeds
(`--seeds 0` skips it).

    python benchmarks/train_step.py [--batch 32] [--rounds 5] [--seeds 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile

import torch
from common import ROOT, interleaved, machine, print_table
from hydra import compose, initialize_config_dir

from daamlab.models.classifier import Classifier
from daamlab.training import train

SWITCHES = {  # variant -> (fused, channels_last, bf16, compile)
    "plain": (False, False, False, False),
    "+fused": (True, False, False, False),
    "+channels_last": (False, True, False, False),
    "+bf16": (False, False, True, False),
    "+compile": (False, False, False, True),
    "all": (True, True, True, True),
}


def make_step(fused: bool, channels_last: bool, bf16: bool, compile: bool, args, device: str):
    torch.manual_seed(0)
    model = Classifier(
        num_layers=24,
        dim=1024,
        num_classes=4,
        attention={"name": "daam", "num_heads": 8, "fused": fused},
        decoder={"name": "dat", "channels": 512, "channels_last": channels_last},
        loss={"name": "ce"},
        optim={"lr": 1e-4, "weight_decay": 0.01, "plateau_factor": 0.1, "plateau_patience": 10},
        compile=compile,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 24, 1024, device=device)
    y = torch.randint(0, 4, (args.batch,), device=device)

    def step() -> None:
        autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model.criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def speed(args, device: str) -> None:
    steps = {name: make_step(*flags, args, device) for name, flags in SWITCHES.items()}
    times = interleaved(steps, rounds=args.rounds, warmup=2, device=device)  # warm-up compiles
    base = times["plain"]
    rows = [(name, f"{1 / t:.2f}", f"{base / t:.2f}x") for name, t in times.items()]
    print_table(
        f"Training steps/s, B={args.batch} N=24 d=1024, DAAM g=8 + dat (512 ch), median of {args.rounds} rounds",
        rows,
        ("variant", "steps/s", "vs plain"),
    )


def accuracy(args) -> None:
    variants = {
        "plain": ["attention.fused=false", "decoder.channels_last=false"],
        "all": ["decoder.channels_last=true", "trainer.precision=bf16-mixed", "compile=true"],
    }
    accs: dict[str, list[float]] = {name: [] for name in variants}
    for seed in range(1, args.seeds + 1):
        for name, overrides in variants.items():
            with (
                tempfile.TemporaryDirectory() as out,
                initialize_config_dir(str(ROOT / "configs"), version_base="1.3"),
                contextlib.redirect_stdout(io.StringIO()),  # each run's config tree and results table
            ):
                cfg = compose(
                    "train",
                    [
                        "modality=toy",
                        f"seed={seed}",
                        "logger=none",
                        "callbacks=none",
                        "trainer.enable_progress_bar=false",
                        "test=false",
                        "decoder.channels=64",  # toy maps are 8 x 8: a small decoder keeps this part short
                        f"trainer.max_epochs={args.epochs}",
                        f"paths.output_dir={out}",
                        *overrides,
                    ],
                )
                accs[name].append(train(cfg)["best_val_acc"])
    rows = [
        (
            name,
            " ".join(f"{a:.3f}" for a in a_list),
            f"{statistics.mean(a_list):.3f} ± {statistics.stdev(a_list):.3f}",
        )
        for name, a_list in accs.items()
    ]
    print_table(
        f"modality=toy best val accuracy, seeds 1..{args.seeds}", rows, ("variant", "per seed", "mean ± sd")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"machine: {machine()}; device {args.device}")
    speed(args, args.device)
    if args.seeds > 1:
        accuracy(args)


if __name__ == "__main__":
    main()
