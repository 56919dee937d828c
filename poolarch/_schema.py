"""Dataclasses as documented, validated option schemas (the vocabulary of :class:`poolarch.train.TrainConfig`
and of the command-line option classes).

    lr: float = option(0.1, group="optimisation", ge=0.0, help="learning rate of the weights")

:func:`option` puts the help text, the ``--help`` group and the allowed values of a field in its
metadata; :func:`check_option` validates a value against the field's type hint and metadata;
:func:`coerce_option` is the one place where a value is converted by its declared type;
:mod:`poolarch.cli` generates the command-line flags from the same metadata. Like
:mod:`poolarch._registry`, it imports nothing from poolarch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

__all__ = ["NestedKey", "option", "bounds_text", "config_key", "option_type", "field_type", "check_option",
           "coerce_option", "coerce_field", "parse_ints", "read_yaml"]


@dataclass(frozen=True)
class NestedKey:
    """A key of a dict field (``model_args``/``method_args``) with a flag of its own
    (``--resolutions`` -> ``model_args['resolutions']``)."""

    key: str
    type: Any
    help: str
    ge: float | None = None
    metavar: str | None = None
    unset: str = "the model's/method's"


def option(default: Any = MISSING, *, help: str, group: str, default_factory: Any = MISSING,
           choices: Sequence[Any] | None = None, ge: float | None = None, gt: float | None = None,
           lt: float | None = None, flag: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, check: Callable[[str, Any], None] | None = None,
           unset: str | None = None, keys: Sequence[NestedKey] = (), nargs: str | None = None) -> Any:
    """A dataclass field with its documentation and validation in ``metadata``.

    ``help``: one sentence for ``--help``; ``group``: the ``--help`` section; ``choices`` /
    ``ge`` / ``gt`` / ``lt``: allowed values (checked by :func:`check_option`); ``flag``: the
    command-line spelling when it is not ``--field-name``; ``parse``: text -> value for a flag whose
    type hint does not say it (``Any``, lists); ``check``: an extra ``check(key, value)``;
    ``unset``: what ``None`` means (shown as the default); ``keys``: :class:`NestedKey` flags of a
    dict field; ``nargs``: argparse ``nargs`` of a list flag (default: one comma-separated value)."""
    meta = dict(help=help, group=group, choices=tuple(choices) if choices is not None else None, ge=ge, gt=gt,
                lt=lt, flag=flag, metavar=metavar, parse=parse, check=check, unset=unset, keys=tuple(keys),
                nargs=nargs)
    return field(default=default, default_factory=default_factory, metadata=meta)


def config_key(f: dataclasses.Field) -> str:
    """The YAML spelling of a field (``lambda`` for ``lambda_``)."""
    return f.name[:-1] if f.name.endswith("_") else f.name


def option_type(hint: Any) -> tuple[Any, bool]:
    """``(base type, None allowed)`` of a field's type hint (``float | None`` -> ``(float, True)``)."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return (typing.get_origin(hint) or hint), False


def bounds_text(ge: float | None, gt: float | None, lt: float | None) -> str:
    if (ge is not None or gt is not None) and lt is not None:
        return f"in {'[' if ge is not None else '('}{ge if ge is not None else gt:g}, {lt:g})"
    if lt is not None:
        return f"< {lt:g}"
    return f">= {ge:g}" if ge is not None else f"> {gt:g}"


def _check_value(key: str, value: Any, base: Any, *, choices=None, ge=None, gt=None, lt=None) -> None:
    """``ValueError`` naming ``key`` and what is allowed unless ``value`` is a ``base`` within bounds."""
    bounded = ge is not None or gt is not None or lt is not None
    bounds = " " + bounds_text(ge, gt, lt) if bounded else ""
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer{bounds}, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number{bounds}, got {value!r}")
    elif base in (str, dict, list):
        if not isinstance(value, (list, tuple) if base is list else base):
            what = {str: "a string", dict: "a mapping", list: "a list"}[base]
            raise ValueError(f"{key} must be {what}, got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")
    if bounded and ((ge is not None and value < ge) or (gt is not None and value <= gt)
                    or (lt is not None and value >= lt)):
        raise ValueError(f"{key} must be {bounds_text(ge, gt, lt)}, got {value!r}")


def coerce_option(key: str, value: Any, base: Any) -> Any:
    """The one place where a value is converted by its declared type: a string for a ``float``
    field (PyYAML reads ``1e-4`` as a string) becomes a float; anything else is kept as is."""
    if base is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key} must be a finite number, got {value!r}") from None
    return value


def check_option(cls: type, f: dataclasses.Field, value: Any) -> None:
    """Validate ``value`` of field ``f`` of dataclass ``cls`` against its type hint and metadata."""
    key = config_key(f)
    base, optional = option_type(_hints(cls)[f.name])
    if value is None and (optional or f.default is None):
        return
    m = f.metadata
    _check_value(key, value, base, choices=m.get("choices"), ge=m.get("ge"), gt=m.get("gt"), lt=m.get("lt"))
    if m.get("check"):
        m["check"](key, value)
    if base is dict:
        by_key = {k.key: k for k in m.get("keys", ())}
        for sub, v in value.items():
            if sub in by_key and v is not None:
                nk = by_key[sub]
                _check_value(f"{key}.{sub}", v, option_type(nk.type)[0], ge=nk.ge)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, f: dataclasses.Field) -> tuple[Any, bool]:
    """:func:`option_type` of field ``f`` of dataclass ``cls``."""
    return option_type(_hints(cls)[f.name])


def coerce_field(cls: type, f: dataclasses.Field, value: Any) -> Any:
    """``value`` for field ``f`` of ``cls`` converted by :func:`coerce_option` (dict fields: their
    :class:`NestedKey` entries too)."""
    key = config_key(f)
    base, _ = option_type(_hints(cls)[f.name])
    value = coerce_option(key, value, base)
    if base is dict and isinstance(value, Mapping):
        by_key = {k.key: k for k in f.metadata.get("keys", ())}
        value = {k: coerce_option(f"{key}.{k}", v, option_type(by_key[k].type)[0]) if k in by_key else v
                 for k, v in value.items()}
    return value


def parse_ints(text: str) -> list[int]:
    """``"5,3,2"`` (also ``"5x3"``, ``"5-3-2"``) -> ``[5, 3, 2]``; ``ValueError`` otherwise."""
    try:
        values = [int(v) for v in text.replace("x", ",").replace("-", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"expected comma-separated integers such as 5,3,2, got {text!r}")
    return values


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; ``ValueError`` naming the file when it is missing, is not
    valid YAML or does not hold a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"config file {str(path)!r} is not valid YAML{where}: "
                         f"{getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of option names to values, "
                         f"got {type(data).__name__}")
    return dict(data)
