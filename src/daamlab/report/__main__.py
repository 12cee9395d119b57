"""python -m daamlab.report <run dirs | multirun dirs | any folder above them> [--out DIR] [--paper FILE] [--wandb]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daamlab.cli import one_line
from daamlab.report import PAPER_RESULTS, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daamlab.report", description=__doc__)
    parser.add_argument(
        "paths", nargs="+", type=Path, help="run directories, multirun directories, or folders above"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/report"), help="where report.md/.csv/PNGs go"
    )
    parser.add_argument(
        "--paper",
        default=str(PAPER_RESULTS),
        help="the paper's numbers (YAML); 'none' leaves the paper column out",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the report's tables and figures to a W&B run of the runs' group (offline by default)",
    )
    args = parser.parse_args(argv)
    try:
        report = build_report(args.paths, args.out, None if args.paper == "none" else Path(args.paper))
        print(report.read_text())
        print(f"written: {report} (+ report.csv, paired.csv and figures in {args.out})")
        if args.wandb:
            from daamlab.report.collect import collect
            from daamlab.tracking import log_report

            groups = sorted({r.group for r in collect(args.paths)[0] if r.group})
            print(f"W&B: {log_report(args.out, groups)}")
    except Exception as e:  # the exit policy of the entry points (cli.one_line): bad input and a full disk
        message = one_line(e)
        if message is None:
            raise
        print(f"daamlab: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
