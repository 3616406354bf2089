"""One resolved setting: how it is spelt on the command line and in the environment, parsed from
text and rendered back (`Spec`). Built by `llmserve.settings.declare.specs`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "LLMSERVE_"
AUTO = "auto"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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
