"""Option groups: frozen dataclasses, each declaring its options once (name, type, default, and help in the
class's ``Args:``), and the flat keys users type and checkpoints keep (``model.text_hidden``).

A class takes its groups as objects; :func:`keyword_function` writes its flat
front from the groups' fields (``ComplaintClassifier.from_keys``, what
LightningCLI instantiates), so that jsonargparse offers ``--model.text_hidden``
and documents it from the one declaration.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, asdict, fields, is_dataclass

import docstring_parser


def _default(field: Field):
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def _as_field_type(value, hint):
    """A YAML or checkpoint list where the group keeps a tuple."""
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def take(group: type, keys: Mapping) -> object:
    """``group`` from those of ``keys`` that are its fields (a missing one takes its default)."""
    hints = typing.get_type_hints(group)
    return group(**{f.name: _as_field_type(keys[f.name], hints[f.name]) for f in fields(group) if f.name in keys})


def split_keys(groups: Iterable[type], keys: Mapping) -> list[object]:
    """Flat keys into one instance of each group; a key no group declares is an error that names it."""
    groups = list(groups)
    known = {f.name for g in groups for f in fields(g)}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; the options are {sorted(known)}")
    return [take(g, keys) for g in groups]


def did_you_mean(wrong: Iterable[str], known: Iterable[str]) -> list[str]:
    """For each key of ``wrong`` that is not ``known``: "'x': did you mean 'y'?", where one is close."""
    known = list(known)
    hints = []
    for key in wrong:
        close = [] if key in known else difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            hints.append(f"'{key}': did you mean '{close[0]}'?")
    return hints


def as_keys(*instances) -> dict:
    """The flat keys of group instances, as plain values (tuples as lists): a checkpoint's hyper-parameters."""
    out = {}
    for instance in instances:
        for name, value in asdict(instance).items() if is_dataclass(instance) else instance.items():
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


_UNSET = object()  # a keyword the caller did not give


def keyword_function(build: Callable[[dict], object], groups: Iterable[type], name: str, returns: type) -> Callable:
    """A function ``name(*, <each field of groups>)`` that returns ``build(keys)`` for the keys given, its
    signature showing each field's type and default and its docstring each field's help (``Args:``): the flat
    front of a class that takes option groups, for jsonargparse (``--model.text_hidden``).

    Written out as dataclasses write their ``__init__``: real parameters. A key not given is left out of ``keys``
    (the group's own default applies, a fresh one for a mutable default).
    """
    parameters, docs, names = [], [], []
    for group in groups:
        hints = typing.get_type_hints(group)
        helps = {p.arg_name: p.description for p in docstring_parser.parse(group.__doc__ or "").params}
        for f in fields(group):
            default = _default(f)
            parameters.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[f.name])
            )
            names.append(f"{f.name}=_UNSET" if default is not inspect.Parameter.empty else f.name)
            if helps.get(f.name):
                docs.append(f"    {f.name}: {' '.join(helps[f.name].split())}")
    given = ", ".join(f"{p.name!r}: {p.name}" for p in parameters)
    source = (
        f"def {name}(*, {', '.join(names)}):\n"
        f"    return _build({{k: v for k, v in {{{given}}}.items() if v is not _UNSET}})\n"
    )
    namespace = {"_UNSET": _UNSET, "_build": build}
    exec(source, namespace)  # noqa: S102 - the source is made here from field names
    function = namespace[name]
    function.__signature__ = inspect.Signature(parameters, return_annotation=returns)
    function.__doc__ = f"{(returns.__doc__ or '').strip().splitlines()[0]}\n\nArgs:\n" + "\n".join(docs) + "\n"
    function.__module__ = build.__module__
    function.__qualname__ = f"{returns.__name__}.{name}"
    return function
