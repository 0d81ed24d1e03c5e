"""PowerShell's values: ``PSObject`` (what cmdlets output: a .NET-style type name and
properties in display order) and a value's conversion to a string (``to_ps_string``: what a
value becomes when bound to a string parameter or expanded in a double-quoted string).

Pure. Binding (``binding``) converts arguments with these; how objects are printed is
``customerkey.pwsh.engine.formatting``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass
class PSObject:
    """An output object: a .NET-style type name and properties in display order."""

    type_name: str
    properties: dict[str, Any]
    display: str | None = None  # what ToString() gives (and so what binds to a string)

    def _key(self, name: str) -> str | None:
        if name in self.properties:
            return name
        lower = name.lower()
        for key in self.properties:
            if key.lower() == lower:
                return key
        return None

    def has(self, name: str) -> bool:
        return self._key(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        key = self._key(name)
        return default if key is None else self.properties[key]

    def real_name(self, name: str) -> str:
        return self._key(name) or name

    def __str__(self) -> str:
        return self.display if self.display is not None else self.type_name


def invariant_date(value: datetime) -> str:
    """A date converted to a string (PowerShell's invariant culture): ``12/27/2016 00:01:00``."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%m/%d/%Y %H:%M:%S")


def number_text(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    return str(value)


def to_ps_string(value: Any) -> str:
    """A value converted to a string, as when it is bound to a string parameter or expanded
    in a double-quoted string: arrays joined by blanks, ``$null`` empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, datetime):
        return invariant_date(value)
    if isinstance(value, list | tuple):
        return " ".join(to_ps_string(v) for v in value)
    if isinstance(value, Mapping):
        return "System.Collections.Hashtable"
    return str(value)
