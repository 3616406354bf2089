"""What is derived from the declared settings: argparse flags (with help and the LLMSERVE_*
variable as the fallback), configs from flags or an environment, and the environment that gives a
child process a config's values."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from llmserve.settings.declare import specs
from llmserve.settings.spec import Spec

C = TypeVar("C")


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
