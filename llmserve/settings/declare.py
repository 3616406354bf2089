"""`setting()`: a dataclass field that is also a setting, and `specs()`: the settings a config
class declares, resolved (flag, variable, kind, choices, default)."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from llmserve.settings.spec import ENV_PREFIX, Spec

_KEY = "llmserve.setting"


@dataclass(frozen=True)
class _Declared:
    """What `setting()` stores in the field's metadata."""

    help: str
    choices: tuple[Any, ...] | None
    flag: str | None
    unit: float | None
    auto: bool
    parse: Callable[[str], Any] | None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Iterable[Any] | None = None,
    flag: str | None = None,
    unit: float | None = None,
    auto: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field that is also a setting. No `default`: the setting must be given.

    `choices`: the allowed values (a `Literal` annotation gives them too). `unit`: the flag takes a
    float in this unit and the field holds `int(value * unit)` (bytes from GiB). `auto`: 0 means
    "decided at start", spelt `auto` in flags, variables and help. `parse`: text -> value, for a
    field that the annotation alone cannot parse (it must raise ValueError on bad text).
    """
    declared = _Declared(help, tuple(choices) if choices is not None else None, flag, unit, auto, parse)
    return dataclasses.field(default=default, metadata={_KEY: declared})


def redefault(cls: type, name: str, default: Any) -> Any:
    """The setting `name` of `cls` with another default (a service's own port, say): the same flag,
    variable and help, declared where it was."""
    declared = _field(cls, name).metadata[_KEY]
    return dataclasses.field(default=default, metadata={_KEY: declared})


def exposed(cls: type, name: str) -> Any:
    """The setting `name` of `cls`, unchanged, as a field of another config (`llmserve up` exposes
    service settings this way: listed by name, declared once)."""
    field = _field(cls, name)
    return dataclasses.field(default=field.default, default_factory=field.default_factory, metadata=field.metadata)


def _field(cls: type, name: str) -> dataclasses.Field:
    for field in dataclasses.fields(cls):
        if field.name == name and _KEY in field.metadata:
            return field
    raise KeyError(f"{cls.__name__} declares no setting {name!r}")


@functools.cache
def specs(cls: type) -> tuple[Spec, ...]:
    """The settings of a config class, in field order (fields without `setting()` are not settings)."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_KEY)
        if declared is None:
            continue
        kind, literal_choices = _kind(hints[field.name], cls, field.name)
        flag = declared.flag or "--" + field.name.replace("_", "-")
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        spec = Spec(
            name=field.name,
            flag=flag,
            env=ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper(),
            help=declared.help,
            kind=kind,
            choices=declared.choices if declared.choices is not None else literal_choices,
            default=default,
            unit=declared.unit,
            auto=declared.auto,
            custom_parse=declared.parse,
        )
        if not spec.required:
            spec.check(default)
        out.append(spec)
    return tuple(out)


def _kind(hint: Any, cls: type, name: str) -> tuple[str, tuple[Any, ...] | None]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "str", args
    if hint in (str, int, float, bool):
        return hint.__name__, None
    if args and set(args) == {str, type(None)}:
        return "optional_str", None
    if origin is tuple and args == (str, ...):
        return "str_tuple", None
    raise TypeError(f"{cls.__name__}.{name}: settings of type {hint!r} are not supported")
