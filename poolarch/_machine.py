"""What machine a measurement ran on, for the figures that scripts write into the docs."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info"]


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """``{"cpu", "nproc", "torch", "python", "platform"}`` of this machine and interpreter."""
    import torch

    return {"nproc": os.cpu_count(), "cpu": _cpu_model(), "torch": str(torch.__version__),
            "python": platform.python_version(), "platform": platform.platform()}
