"""Argument checks shared by the whole package: one message style, naming the argument and the
allowed values (``"resolutions must be an int >= 1, got 0"``).

Wrong type -> ``TypeError``; right type, value out of range or not allowed -> ``ValueError``.
It is the bottom of the package: it imports nothing from poolarch.
"""
from __future__ import annotations

import math
from typing import Any, Sequence, TypeVar

__all__ = ["check_int", "check_number", "check_choice", "check_positive_finite"]

T = TypeVar("T")


def check_int(value: Any, name: str, minimum: int | None = None, *, allow_none: bool = False) -> Any:
    """``value`` if it is an int (not a bool) ``>= minimum`` (or ``None`` with ``allow_none``)."""
    if value is None and allow_none:
        return value
    allowed = "an int" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_number(value: Any, name: str, minimum: float | None = None, *, strict: bool = False) -> float:
    """``float(value)`` if it is a finite real number ``>= minimum`` (``> minimum`` with ``strict``)."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number{bound}, got {value!r}")
    if not math.isfinite(value) or (
        minimum is not None and (value <= minimum if strict else value < minimum)
    ):
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_choice(value: T, allowed: Sequence[T], name: str) -> T:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_positive_finite(values: Sequence[float], name: str) -> None:
    """Every entry of ``values`` is finite and ``> 0`` (e.g. per-axis scales or strides)."""
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be positive and finite, got {tuple(values)}")
