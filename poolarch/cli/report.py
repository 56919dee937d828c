"""``poolarch report``: Markdown tables and figures from run directories."""
from __future__ import annotations

import argparse
from pathlib import Path

from poolarch.report import make_report

from . import guard

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown tables and figures from run directories")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories or folders of runs (a sweep)")
    p.add_argument("--out", metavar="DIR", default="report", help="output folder (default: report)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    # make_report reads runs and folders of runs (a sweep); what is neither is refused there
    out = guard(lambda: make_report([Path(d) for d in args.run_dirs], Path(args.out)))
    print(f"report written to {out if out is not None else args.out} (each run at its result: last epoch, last.pt)")
    return 0
