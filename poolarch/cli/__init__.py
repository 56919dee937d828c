"""``poolarch`` command line: ``train``, ``eval``, ``export`` (:mod:`.train`), ``search``,
``sweep``, ``rank-corr`` (:mod:`.search`) and ``report`` (:mod:`.report`).

The top layer of the package: nothing in poolarch imports it. The flags of ``train`` and
``search`` are generated from :class:`poolarch.train.TrainConfig` and the option dataclasses of
the commands (:mod:`._options`). ``poolarch train`` with no arguments runs the embedded demo.

Bad input -- at parse time or raised as ``ValueError``/``TypeError``/``OSError`` while a run is
built or trained (an unreadable image in the first epoch) -- prints one line
``poolarch <command>: error: ...`` and exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from typing import Callable, Sequence, TypeVar

__all__ = ["main", "build_parser", "config_from_args", "run_demo", "DEMO_CONFIG", "UsageError", "guard", "one_line",
           "configure_logging", "line_logger"]

T = TypeVar("T")


class UsageError(Exception):
    """Bad input at the command line: reported in one line, exit status 2."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` in one line: its first line, or -- for an error re-raised from a
    DataLoader worker (``Caught ValueError in DataLoader worker process 0.`` and the worker's
    traceback) -- the original error's message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Caught ") and " worker " in lines[0] and len(lines) > 1:
        name, sep, message = lines[-1].partition(": ")
        return message if sep and name.replace(".", "").isidentifier() else lines[-1]
    return lines[0]


def guard(factory: Callable[[], T]) -> T:
    """Run ``factory``; bad input (``ValueError``/``TypeError``/``OSError``) becomes a :class:`UsageError`
    carrying its message in one line (:func:`one_line`)."""
    try:
        return factory()
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(one_line(e)) from e


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help lines between words only, so names such as ``random-seg`` stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line ``<prog>: error: ...`` (no usage block), exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _StdoutHandler(logging.Handler):
    """Bare messages to the current ``sys.stdout`` (looked up per record, so redirection works)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stdout, flush=True)
        except Exception:  # pragma: no cover  (logging's own policy: never raise from a handler)
            self.handleError(record)


def configure_logging(quiet: bool = False) -> logging.Logger:
    """``logging.getLogger("poolarch")`` prints bare messages to stdout at INFO (WARNING when
    ``quiet``); idempotent."""
    logger = logging.getLogger("poolarch")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    return logger


def line_logger(quiet: bool = False, indent: str = "") -> Callable[[str], None]:
    """The per-line callable handed to the engine (``log=``): lines go through the ``poolarch``
    logger (nothing when ``quiet``)."""
    logger = logging.getLogger("poolarch")
    return (lambda line: None) if quiet else (lambda line: logger.info(indent + line))


from . import report as _report, search as _search, train as _train  # noqa: E402  (they use UsageError, guard)
from .train import DEMO_CONFIG, config_from_args, run_demo  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="poolarch", description="Learn where and how much a CNN downsamples.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _train.add_commands(sub)
    _report.add_commands(sub)
    _search.add_commands(sub)
    for name, p in sub.choices.items():
        p.set_defaults(_parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's parser, so the line names the command
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(quiet=bool(getattr(args, "quiet", False)))
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"poolarch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
