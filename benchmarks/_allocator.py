"""``--allocator`` for the CPU benchmarks: time every side on warm memory.

With glibc's defaults, every CPU tensor over 32 MB is a fresh ``mmap`` that page-faults on first
touch, and whether a smaller one lands on a warm heap chunk depends on the allocation history. At
(128, 64, 32, 32) that swung single cells of ``bench_dynopool.py`` between 1.0x and 2.5x from one run
to the next (a fresh 47 MB tensor: about 20 ms to fault in, 2 ms to refill once warm, on a 2-core
AMD EPYC VM). ``retain`` (the default) re-runs the script with ``GLIBC_TUNABLES`` set so that freed
memory stays in the heap (no ``mmap``, no trimming), as a caching allocator (jemalloc, tcmalloc,
CUDA's) keeps it; ``system`` keeps glibc's defaults.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

RETAIN_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
"""glibc: never ``mmap`` (large tensors come from the heap too), never give freed heap memory back."""


def add_allocator_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allocator", choices=("retain", "system"), default="retain",
                        help="retain: time on warm memory (benchmarks/_allocator.py); system: glibc defaults")


def apply_allocator(choice: str) -> str:
    """For ``retain``: re-run this process with :data:`RETAIN_TUNABLES` (``GLIBC_TUNABLES`` is read at
    process start) unless already set. Returns the allocator's description for a report's header."""
    if choice == "system":
        return "system allocator defaults"
    if platform.libc_ver()[0] != "glibc":
        return "system allocator (not glibc)"
    if os.environ.get("GLIBC_TUNABLES") != RETAIN_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": RETAIN_TUNABLES})
    return f"glibc heap retained (GLIBC_TUNABLES={RETAIN_TUNABLES})"
