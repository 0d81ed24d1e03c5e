"""How the interpreter treats values: a pipeline's output as one value (``collapse``), what a
value puts into a pipeline (``enumerate_value``), member access with PowerShell's member
enumeration (``member``) and indexing (``index``). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from customerkey.pwsh.engine.formatting import as_object
from customerkey.pwsh.language.values import to_ps_string


def collapse(items: Sequence[Any]) -> Any:
    """A pipeline's output as one value: nothing is $null, one item is itself."""
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    return list(items)


def enumerate_value(value: Any) -> list[Any]:
    """What a value puts into a pipeline: an array's items, $null nothing, else itself."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def member(value: Any, name: str) -> Any:
    """``value.name``: a property (any case), an array's Count/Length, or member
    enumeration over an array's items; $null when there is no such member."""
    lower = name.lower()
    if value is None:
        return None
    if isinstance(value, list | tuple):
        if lower in ("count", "length"):
            return len(value)
        found = [member(v, name) for v in value]
        flat: list[Any] = []
        for item in found:
            if isinstance(item, list):
                flat.extend(item)
            elif item is not None:
                flat.append(item)
        return collapse(flat)
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() == lower:
                return item
        if lower == "count":
            return len(value)
        if lower == "keys":
            return list(value)
        if lower == "values":
            return list(value.values())
        return None
    if isinstance(value, str):
        return len(value) if lower == "length" else None
    return as_object(value).get(name)


def index(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return member(value, to_ps_string(key))
    if isinstance(key, str) and key.lstrip("-").isdigit():
        key = int(key)
    if not isinstance(key, int) or isinstance(key, bool):
        return None
    if isinstance(value, list | tuple | str):
        try:
            return value[key]
        except IndexError:
            return None
    if value is not None and key in (0, -1):
        return value
    return None
