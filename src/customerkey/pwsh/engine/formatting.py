"""Output objects and how PowerShell prints them: default views, Format-List, Format-Table,
Select-Object. Pure: every function returns text lines or objects and prints nothing.

Cmdlets return ``PSObject``s (a type name and ordered properties named like the real
cmdlets'). A type may register a list view (labelled lines, such as Get-AzKeyVault's
"Vault Name : ...") and a table view (columns, as the Exchange cmdlets print); ``register_view``
is the extension point for cmdlet modules. An object without a view prints as a table when it
has four properties or fewer, as a list otherwise, as PowerShell does.

Values print as PowerShell shows them: ``True``/``False``, dates as ``12/27/2016 12:01:00 AM``
(times are UTC), arrays as ``{a, b}`` cut after ``$FormatEnumerationLimit`` (4) items.
``PSObject`` itself and a value's conversion to a string are ``customerkey.pwsh.language.values``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from customerkey.pwsh.language.values import PSObject, number_text
from customerkey.views.vault import iso

ENUMERATION_LIMIT = 4
_MISSING = object()


@dataclass(frozen=True)
class Field:
    """One line of a list view or one column of a table: a label and a property name (or a
    function of the object)."""

    label: str
    value: str | Callable[[PSObject], Any]

    def of(self, obj: PSObject) -> Any:
        if isinstance(self.value, str):
            return obj.get(self.value)
        return self.value(obj)


@dataclass(frozen=True)
class View:
    list_fields: tuple[Field, ...] | None = None
    table_columns: tuple[Field, ...] | None = None
    default: Literal["list", "table"] = "list"


_VIEWS: dict[str, View] = {}


def _fields(spec: Sequence[Field | str | tuple[str, str]] | None) -> tuple[Field, ...] | None:
    if spec is None:
        return None
    out = []
    for item in spec:
        if isinstance(item, Field):
            out.append(item)
        elif isinstance(item, tuple):
            out.append(Field(item[0], item[1]))
        else:
            out.append(Field(item, item))
    return tuple(out)


def register_view(
    type_name: str,
    *,
    list_view: Sequence[Field | str | tuple[str, str]] | None = None,
    table_view: Sequence[Field | str | tuple[str, str]] | None = None,
    default: Literal["list", "table"] | None = None,
) -> None:
    """Declare how objects of ``type_name`` print by default (and with bare ``fl``/``ft``).
    Fields are property names, ``(label, property)`` pairs or ``Field``s."""
    chosen = default or ("list" if list_view is not None else "table")
    _VIEWS[type_name] = View(_fields(list_view), _fields(table_view), chosen)


def view_of(type_name: str) -> View | None:
    return _VIEWS.get(type_name)


@dataclass
class FormattedOutput:
    """What Format-List / Format-Table produce: text, plus the selected properties for
    ``--json``. Nothing but output may follow it in a pipeline, as in PowerShell."""

    lines: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------- values as text


def ps_date(value: datetime) -> str:
    """en-US general date-time, like ``12/27/2016 12:01:00 AM`` (in UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    hour = value.hour % 12 or 12
    half = "AM" if value.hour < 12 else "PM"
    clock = f"{hour}:{value.minute:02d}:{value.second:02d} {half}"
    return f"{value.month}/{value.day}/{value.year} {clock}"


def ps_long_date(value: datetime) -> str:
    """How PowerShell prints a bare date: ``Tuesday, December 27, 2016 12:01:00 AM``."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    hour = value.hour % 12 or 12
    half = "AM" if value.hour < 12 else "PM"
    return (
        f"{value:%A}, {value:%B} {value.day}, {value.year} "
        f"{hour}:{value.minute:02d}:{value.second:02d} {half}"
    )


def format_value(value: Any, *, limit: int = ENUMERATION_LIMIT) -> str:
    """A property value as Format-List and Format-Table show it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, datetime):
        return ps_date(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        items = [f"[{k}, {format_value(v, limit=limit)}]" for k, v in value.items()]
        return _enumeration(items, limit)
    if isinstance(value, list | tuple):
        return _enumeration([format_value(v, limit=limit) for v in value], limit)
    return str(value)


def _enumeration(items: list[str], limit: int) -> str:
    if limit >= 0 and len(items) > limit:
        return "{" + ", ".join(items[:limit]) + "...}"
    return "{" + ", ".join(items) + "}"


def format_scalar(value: Any) -> str:
    """A value printed on its own (not as a property): dates in the long form."""
    if isinstance(value, datetime):
        return ps_long_date(value)
    return format_value(value)


# ---------------------------------------------------------------------- property selection


def expand_properties(obj: PSObject, patterns: Sequence[str]) -> list[str]:
    """Property names matching ``patterns`` (wildcards allowed), as the object spells them.
    A plain name the object lacks is kept as typed (it shows as empty)."""
    names: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            lowered = pattern.lower()
            for name in obj.properties:
                if fnmatch.fnmatchcase(name.lower(), lowered) and name not in names:
                    names.append(name)
        else:
            real = obj.real_name(pattern)
            if real not in names:
                names.append(real)
    return names


def as_object(value: Any) -> PSObject:
    """Anything as an object with properties (a string has just its Length, as in .NET)."""
    if isinstance(value, PSObject):
        return value
    if isinstance(value, Mapping):
        return PSObject("System.Collections.Hashtable", {str(k): v for k, v in value.items()})
    if isinstance(value, str):
        return PSObject("System.String", {"Length": len(value)}, display=value)
    if isinstance(value, datetime):
        return PSObject(
            "System.DateTime",
            {
                "Date": value.replace(hour=0, minute=0, second=0, microsecond=0),
                "Day": value.day,
                "DayOfWeek": f"{value:%A}",
                "Hour": value.hour,
                "Minute": value.minute,
                "Month": value.month,
                "Second": value.second,
                "Year": value.year,
            },
            display=ps_long_date(value),
        )
    return PSObject(type(value).__name__, {}, display=format_value(value))


# ---------------------------------------------------------------------- list and table


def _list_block(pairs: Sequence[tuple[str, Any]], limit: int) -> list[str]:
    if not pairs:
        return []
    width = max(len(label) for label, _ in pairs)
    lines = []
    for label, value in pairs:
        text = format_value(value, limit=limit).replace("\r\n", "\n")
        first, *rest = text.split("\n")
        lines.append(f"{label:<{width}} : {first}".rstrip())
        lines.extend((" " * (width + 3) + more).rstrip() for more in rest)
    return lines


def _list_pairs(obj: PSObject, properties: Sequence[str] | None) -> list[tuple[str, Any]]:
    if properties is None:
        view = view_of(obj.type_name)
        if view is not None and view.list_fields is not None:
            return [(f.label, f.of(obj)) for f in view.list_fields]
        return list(obj.properties.items())
    names = expand_properties(obj, properties)
    return [(name, obj.get(name)) for name in names if obj.has(name)]


def format_list(
    objects: Iterable[Any],
    properties: Sequence[str] | None = None,
    *,
    limit: int = ENUMERATION_LIMIT,
) -> FormattedOutput:
    """Format-List: ``Name : Value`` lines, names padded to the longest, a blank line
    between objects. No properties: the type's list view, else every property."""
    lines: list[str] = []
    records: list[dict[str, Any]] = []
    for value in objects:
        if not isinstance(value, PSObject | Mapping):
            lines += ["", format_scalar(value)]
            records.append({"Value": value})
            continue
        obj = as_object(value)
        pairs = _list_pairs(obj, properties)
        lines.append("")
        lines.extend(_list_block(pairs, limit))
        records.append(dict(pairs))
    if lines:
        lines += ["", ""]
    return FormattedOutput(lines, records)


def _table_fields(obj: PSObject, properties: Sequence[str] | None) -> tuple[Field, ...]:
    if properties is None:
        view = view_of(obj.type_name)
        if view is not None and view.table_columns is not None:
            return view.table_columns
        return tuple(Field(n, n) for n in obj.properties)
    return tuple(Field(n, n) for n in expand_properties(obj, properties))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _table(
    objects: Sequence[PSObject], fields: Sequence[Field], *, headers: bool, limit: int
) -> list[str]:
    rows = [[f.of(o) for f in fields] for o in objects]
    cells = [
        [format_value(v, limit=limit).replace("\r\n", " ").replace("\n", " ") for v in row]
        for row in rows
    ]
    right = [
        bool(rows)
        and all(_is_number(row[i]) or row[i] is None for row in rows)
        and any(_is_number(row[i]) for row in rows)
        for i in range(len(fields))
    ]
    widths = [max([len(f.label)] + [len(row[i]) for row in cells]) for i, f in enumerate(fields)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if right[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return " ".join(parts).rstrip()

    out: list[str] = []
    if headers:
        out.append(line([f.label for f in fields]))
        out.append(line(["-" * len(f.label) for f in fields]))
    out.extend(line(row) for row in cells)
    return out


def format_table(
    objects: Iterable[Any],
    properties: Sequence[str] | None = None,
    *,
    headers: bool = True,
    limit: int = ENUMERATION_LIMIT,
) -> FormattedOutput:
    """Format-Table: a header row, dashes under each header, one row per object. Columns
    come from the first object; no properties: the type's table view, else every property."""
    items = [as_object(v) for v in objects]
    if not items:
        return FormattedOutput([])
    fields = _table_fields(items[0], properties)
    lines = ["", *_table(items, fields, headers=headers, limit=limit), ""]
    records = [{f.label: f.of(o) for f in fields} for o in items]
    return FormattedOutput(lines, records)


# ---------------------------------------------------------------------- Select-Object


def select_object(
    objects: Sequence[Any],
    properties: Sequence[str] | None = None,
    *,
    expand: str | None = None,
    first: int | None = None,
    last: int | None = None,
    skip: int = 0,
) -> list[Any]:
    """Select-Object: new objects with only the named properties (``*`` wildcards), or the
    values of one property with ``-ExpandProperty``; ``-First``/``-Last``/``-Skip``."""
    chosen = list(objects)[skip:]
    if first is not None or last is not None:
        head = chosen[:first] if first is not None else []
        tail = chosen[len(chosen) - last :] if last else []
        if first is not None and last is not None:
            chosen = head + [t for t in tail if t not in head]
        else:
            chosen = head if first is not None else tail
    out: list[Any] = []
    for value in chosen:
        obj = as_object(value)
        if properties:
            names = expand_properties(obj, properties)
            obj = PSObject(
                f"Selected.{obj.type_name}",
                {name: obj.get(name) for name in names},
                display=obj.display,
            )
        if expand is not None:
            real = obj.real_name(expand)
            if not obj.has(real):
                raise KeyError(expand)
            item = obj.get(real)
            out.extend(item if isinstance(item, list | tuple) else [item])
        elif properties:
            out.append(obj)
        else:
            out.append(value)
    return out


# ---------------------------------------------------------------------- default output


def _default_kind(obj: PSObject) -> Literal["list", "table"]:
    view = view_of(obj.type_name)
    if view is not None:
        return view.default
    return "table" if len(obj.properties) <= 4 else "list"


def render(objects: Sequence[Any], *, limit: int = ENUMERATION_LIMIT) -> list[str]:
    """Out-Default: how a statement's output prints. Runs of objects of one type that print
    as a table share one table; formatted output prints as it is."""
    lines: list[str] = []
    index = 0
    while index < len(objects):
        value = objects[index]
        if isinstance(value, FormattedOutput):
            lines.extend(value.lines)
            index += 1
            continue
        if isinstance(value, Mapping):
            rows = [PSObject("Entry", {"Name": k, "Value": v}) for k, v in value.items()]
            lines += [
                "",
                *_table(
                    rows,
                    (Field("Name", "Name"), Field("Value", "Value")),
                    headers=True,
                    limit=limit,
                ),
                "",
            ]
            index += 1
            continue
        if not isinstance(value, PSObject):
            lines.append(format_scalar(value))
            index += 1
            continue
        if _default_kind(value) == "list":
            run = [value]
            index += 1
            while (
                index < len(objects)
                and isinstance(objects[index], PSObject)
                and _default_kind(objects[index]) == "list"
            ):
                run.append(objects[index])
                index += 1
            lines.extend(format_list(run, limit=limit).lines)
            continue
        run = [value]
        index += 1
        while (
            index < len(objects)
            and isinstance(objects[index], PSObject)
            and objects[index].type_name == value.type_name
        ):
            run.append(objects[index])
            index += 1
        lines.extend(format_table(run, limit=limit).lines)
    return lines


def to_jsonable(value: Any) -> Any:
    """Output as JSON-ready data (``--json``): objects as property maps, dates ISO 8601."""
    if isinstance(value, PSObject):
        return {k: to_jsonable(v) for k, v in value.properties.items()}
    if isinstance(value, FormattedOutput):
        return [to_jsonable(r) for r in value.records]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
