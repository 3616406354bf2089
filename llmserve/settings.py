"""Settings declared once, as fields of a frozen config dataclass; flags, LLMSERVE_* variables,
help and child-process environments are derived from the declaration.

    @dataclass(frozen=True, kw_only=True)
    class WorkerConfig:
        max_num_seqs: int = setting(0, auto=True, help="most sequences per step")

gives `--max-num-seqs N` (help "most sequences per step (default: auto; env LLMSERVE_MAX_NUM_SEQS)"),
the variable `LLMSERVE_MAX_NUM_SEQS` as the flag's fallback, and `to_env(config)` renders the value
back as `LLMSERVE_MAX_NUM_SEQS=...` for a child process. The flag comes from the field name (or
`flag=`, for a field stored in other units than it is typed in: `host_tier_bytes` is set as
`--host-tier-gb` with `unit=GIB`), the variable from the flag. The type comes from the annotation:
str, int, float, bool (`--x/--no-x`), `str | None` (empty is None), `tuple[str, ...]` (comma
separated) and `Literal[...]` (its values are the choices). Like vLLM's flags derived from its config
dataclasses (`get_kwargs` in vllm/engine/arg_utils.py), minus the docstring parsing: help is explicit.

Pure and stdlib-only, so that every layer can declare its settings here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

_KEY = "llmserve.setting"
ENV_PREFIX = "LLMSERVE_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
AUTO = "auto"

C = TypeVar("C")


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


@dataclass(frozen=True)
class Spec:
    """One resolved setting: how it is spelt, parsed and rendered."""

    name: str
    flag: str
    env: str
    help: str
    kind: str  # "str" | "int" | "float" | "bool" | "optional_str" | "str_tuple"
    choices: tuple[Any, ...] | None
    default: Any  # dataclasses.MISSING: required
    unit: float | None
    auto: bool
    custom_parse: Callable[[str], Any] | None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def parse(self, text: str) -> Any:
        """Text (a flag's argument or a variable's value) -> the field's value; ValueError on bad text."""
        text = text.strip()
        if self.custom_parse is not None:
            value = self.custom_parse(text)
        elif self.auto and text.lower() == AUTO:
            value = 0
        elif self.unit is not None:
            value = int(round(float(text) * self.unit))
        elif self.kind == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}, got {text!r}")
            value = text.lower() in _TRUE
        elif self.kind == "int":
            value = int(text)
        elif self.kind == "float":
            value = float(text)
        elif self.kind == "optional_str":
            value = text or None
        elif self.kind == "str_tuple":
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            value = text
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"choose one of {', '.join(map(str, self.choices))}, not {value!r}")
        return value

    def check(self, value: Any) -> None:
        """Raises ValueError naming the flag when `value` is not one of the choices."""
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}")

    def render(self, value: Any) -> str:
        """The value as text that `parse` reads back (for a variable or a help line)."""
        if self.auto and value == 0:
            return AUTO
        if self.unit is not None:
            return str(value / self.unit)
        if self.kind == "bool":
            return "true" if value else "false"
        if value is None:
            return ""
        if self.kind == "str_tuple":
            return ",".join(value)
        return str(value)


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


def _help(spec: Spec) -> str:
    default = "required" if spec.required else f"default: {spec.render(spec.default) or 'none'}"
    return f"{spec.help} ({default}; env {spec.env})".replace("%", "%%")


def add_settings(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Adds a flag per setting of `cls` (or of its settings `names`). A setting's LLMSERVE_*
    variable in `env` (default: os.environ), when set, replaces its declared default; a variable
    that does not parse raises ValueError naming it."""
    env = os.environ if env is None else env
    wanted = None if names is None else set(names)
    for spec in specs(cls):
        if wanted is not None and spec.name not in wanted:
            continue
        default: Any = spec.default
        if spec.env in env:
            try:
                default = spec.parse(env[spec.env])
            except ValueError as err:
                raise ValueError(f"{spec.env}={env[spec.env]!r}: {err}") from None
        kwargs: dict[str, Any] = {"dest": spec.name}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            # Wrapped, because argparse would run a plain string default through `type` again.
            kwargs["default"] = _Resolved(default)
        if spec.kind == "bool" and spec.custom_parse is None:
            action = parser.add_argument(spec.flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            metavar = "{" + ",".join(map(str, spec.choices)) + "}" if spec.choices else spec.flag.lstrip("-").replace("-", "_").upper()
            action = parser.add_argument(spec.flag, type=_argparse_type(spec), metavar=metavar, **kwargs)
        # Set after construction: BooleanOptionalAction would append its own "(default: ...)".
        action.help = _help(spec)


@dataclass(frozen=True)
class _Resolved:
    value: Any


def _argparse_type(spec: Spec) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def values_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of the settings of `cls` that `args` holds, by field name."""
    out = {}
    for spec in specs(cls):
        if hasattr(args, spec.name):
            value = getattr(args, spec.name)
            out[spec.name] = value.value if isinstance(value, _Resolved) else value
    return out


def config_from_args(cls: type[C], args: argparse.Namespace, **fixed: Any) -> C:
    """The frozen config from parsed flags (its validation raises ValueError naming the flag);
    `fixed` sets fields that are not flags."""
    return cls(**values_from_args(cls, args), **fixed)


def config_from_env(cls: type[C], env: Mapping[str, str], argv: list[str] | None = None) -> C:
    """The config a process would build from `argv` (default none) and the variables `env`."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_settings(parser, cls, env=env)
    return config_from_args(cls, parser.parse_args(argv or []))


def to_env(config: Any, names: Iterable[str] | None = None) -> dict[str, str]:
    """LLMSERVE_* variables that give a child process the settings of `config` (or its `names`)."""
    wanted = None if names is None else set(names)
    return {
        spec.env: spec.render(getattr(config, spec.name))
        for spec in specs(type(config))
        if wanted is None or spec.name in wanted
    }


def values_env(cls: type, **values: Any) -> dict[str, str]:
    """LLMSERVE_* variables that give a child process of config class `cls` these values."""
    by_name = {spec.name: spec for spec in specs(cls)}
    return {by_name[name].env: by_name[name].render(value) for name, value in values.items()}


def check_choices(config: Any) -> None:
    """Raises ValueError naming the flag when a setting of `config` is not one of its choices (for
    configs built in code, which skip the flag parser)."""
    for spec in specs(type(config)):
        spec.check(getattr(config, spec.name))


def env_names(cls: type) -> frozenset[str]:
    """The LLMSERVE_* variables that configure `cls`."""
    return frozenset(spec.env for spec in specs(cls))
