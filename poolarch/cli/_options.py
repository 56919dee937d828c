"""argparse flags generated from an option dataclass (:class:`poolarch.train.TrainConfig`, the
command option classes): one flag per field, spelled ``--field-name`` (or the field's ``flag``),
typed by its type hint, with its help text, the valid registry names and its default.

Flags default to ``None`` so that only what the user typed overrides a YAML file;
:func:`given` collects those values again, keyed like the YAML file.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterable, Mapping

import yaml

from poolarch._schema import NestedKey, bounds_text, config_key, field_type, option_type, parse_ints

__all__ = ["add_options", "given", "given_flags", "format_default"]

def format_default(value: Any, unset: str | None = None) -> str:
    """How a default reads in ``--help``: ``None`` as what it means, lists comma-separated."""
    if value is None or value == {}:
        return unset or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else (unset or "none")
    return format(value, "g") if isinstance(value, float) else str(value)


def _typed(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` whose error says what was expected."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as e:
            message = str(e) if str(e).startswith("expected") else f"expected {expected}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = expected
    return convert


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


_PARSERS: dict[Any, tuple[Callable[[str], Any], str]] = {
    int: (int, "an integer"), float: (float, "a number"), str: (str, "text"),
    list: (parse_ints, "comma-separated integers"), dict: (_key_value, "KEY=VALUE"),
}


def _help(text: str, default: str, names: Iterable[str] | None = None, meta: Mapping[str, Any] | None = None) -> str:
    if text == argparse.SUPPRESS:
        return text
    meta = meta or {}
    if any(meta.get(k) is not None for k in ("ge", "gt", "lt")):
        text += f", {bounds_text(meta.get('ge'), meta.get('gt'), meta.get('lt'))}"
    text = text + (f"; one of: {', '.join(names)}" if names else "")
    return f"{text} (default: {default})".replace("%", "%%")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls: type, prefix: str, *, skip: Iterable[str] = (),
                defaults: Mapping[str, Any] | None = None, names: Mapping[str, Callable[[], list[str]]] | None = None,
                helps: Mapping[str, str] | None = None, nested: bool = True, group: str | None = None) -> None:
    """Add one flag per field of dataclass ``cls`` (except ``skip``) to ``parser``.

    ``prefix`` keeps the dests of different dataclasses apart (``"cfg."`` -> ``cfg.lr``);
    ``defaults`` replaces the shown default of a field (by field name); ``names`` maps a field to
    the ``list_*`` function of its registry (its names are listed in the help); ``helps``
    replaces a help text; ``nested``: also add the flags of the :class:`NestedKey` entries of dict
    fields; ``group``: put every flag in this group instead of the fields' own groups."""
    defaults, names, helps, skip = defaults or {}, names or {}, helps or {}, set(skip)
    groups: dict[str, argparse._ArgumentGroup] = {}

    def target(title: str | None):
        if title is None:
            return parser
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        m = f.metadata
        base, _ = field_type(cls, f)
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        flags = m.get("flag") or _flag(f.name)
        flags = (flags,) if isinstance(flags, str) else tuple(flags)
        g = target(group or m.get("group"))
        choices = names[f.name]() if f.name in names else m.get("choices")
        text = helps.get(f.name, m["help"])
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=None,
                                      help=_help(text, format_default(default, m.get("unset")), choices, m))
        if base is bool:
            g.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        parse, expected = (m["parse"], m.get("metavar") or "a value") if m.get("parse") else \
            _PARSERS.get(base, (str, "text"))
        if base is dict:
            kwargs.update(action="append", metavar="KEY=VALUE")
        elif m.get("nargs"):
            kwargs.update(nargs=m["nargs"])
        kwargs.setdefault("metavar", m.get("metavar") or config_key(f).upper())
        g.add_argument(*flags, type=_typed(parse, expected), **kwargs)
        if base is dict and nested:
            for key in m.get("keys", ()):
                _add_nested(g, prefix + f.name, key)


def _add_nested(g: argparse._ArgumentGroup, dest: str, key: NestedKey) -> None:
    base = option_type(key.type)[0]
    kwargs: dict[str, Any] = dict(dest=f"{dest}.{key.key}", default=None,
                                  help=_help(key.help, key.unset, meta={"ge": key.ge}))
    if base is bool:
        g.add_argument(_flag(key.key), action=argparse.BooleanOptionalAction, **kwargs)
        return
    parse, expected = _PARSERS[base]
    g.add_argument(_flag(key.key), type=_typed(parse, expected), metavar=key.metavar or key.key.upper(), **kwargs)


def given(args: argparse.Namespace, cls: type, prefix: str) -> dict[str, Any]:
    """The values of ``cls``'s flags the user gave, keyed like YAML (``lambda``); a dict field
    collects its ``KEY=VALUE`` flags and its nested-key flags."""
    values = vars(args)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dest = prefix + f.name
        if dest not in values:
            continue
        value = values[dest]
        if field_type(cls, f)[0] is dict:
            pairs = dict(value or [])
            pairs.update({k[len(dest) + 1:]: v for k, v in values.items()
                          if k.startswith(dest + ".") and v is not None})
            value = pairs or None
        if value is not None:
            out[config_key(f)] = value
    return out


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, ignore: Iterable[str] = ()) -> list[str]:
    """The flags whose values were given (long spelling), except those with a dest in ``ignore``."""
    ignore = set(ignore)
    return [next(s for s in a.option_strings if s.startswith("--")) for a in parser._actions
            if a.option_strings and a.dest not in ignore and getattr(args, a.dest, None) not in (None, [])]
