"""Parameter metadata and binding, PowerShell's way.

A cmdlet declares ``Param``s: a name, aliases, a type (``string``, ``string[]``, ``switch``,
``bool``, ``int``, ``datetime``, ``guid``, ``hashtable``, ``object``), a position, parameter sets,
whether it is mandatory, a ValidateSet, whether ``$null`` is allowed, whether it takes
pipeline input. ``bind`` matches the arguments of one command against them:

- names are case-insensitive and may be shortened to any unambiguous prefix (of a name or
  an alias; an exact name or alias always wins);
- a switch takes no value unless given as ``-Switch:$false``; any other parameter takes the
  next argument (``-Name value``) or its colon value (``-Name:value``);
- what is left binds by position, in position order;
- the parameter set is the one every bound parameter belongs to (the default set when several
  fit), and its mandatory parameters must be there;
- every value is converted to the parameter's type.

Failures raise ``BindingError`` with PowerShell's wording and the offset of the offending
parameter or argument, before anything runs. The common parameters (``-Verbose``,
``-ErrorAction``, ``-WhatIf``, ``-Confirm``...) are part of every signature, as in PowerShell,
so they take part in prefix matching too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from customerkey.pwsh.language.values import PSObject, to_ps_string

ParamType = Literal[
    "string", "string[]", "switch", "bool", "int", "datetime", "guid", "hashtable", "object"
]

TYPE_NAMES: dict[str, str] = {
    "string": "System.String",
    "string[]": "System.String[]",
    "switch": "System.Management.Automation.SwitchParameter",
    "bool": "System.Boolean",
    "int": "System.Int32",
    "datetime": "System.DateTime",
    "guid": "System.Guid",
    "hashtable": "System.Collections.Hashtable",
    "object": "System.Object",
}
ALL_SETS = "__AllParameterSets"
ACTION_PREFERENCES = ("Continue", "Ignore", "Inquire", "SilentlyContinue", "Stop", "Suspend")


class BindingError(Exception):
    """A command's arguments do not fit its parameters; nothing has run."""

    def __init__(
        self, message: str, *, error_id: str, start: int | None = None, end: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.start = start
        self.end = end


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType = "string"
    aliases: tuple[str, ...] = ()
    position: int | None = None
    mandatory: bool | tuple[str, ...] = False  # True, or the sets it is mandatory in
    sets: tuple[str, ...] = ()  # the parameter sets it belongs to; () = all of them
    choices: tuple[str, ...] = ()  # ValidateSet, case-insensitive
    allow_null: bool = False
    pipeline: bool = False  # ValueFromPipeline
    remaining: bool = False  # ValueFromRemainingArguments: takes every leftover argument
    help: str = ""
    # Documented by Microsoft but not implemented here: ``ignored`` ones bind, warn and are
    # dropped; a ``refused`` one (the reason) stops the command before it runs.
    ignored: bool = False
    refused: str = ""

    def in_set(self, name: str) -> bool:
        return not self.sets or name in self.sets

    def mandatory_in(self, name: str) -> bool:
        if isinstance(self.mandatory, tuple):
            return name in self.mandatory
        return self.mandatory and self.in_set(name)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# The shell honours -ErrorAction, -WarningAction and -OutVariable (and -WhatIf); the other
# common parameters have no stream or variable to act on here, so they warn and are dropped.
COMMON_PARAMETERS: tuple[Param, ...] = (
    Param("Verbose", "switch", aliases=("vb",), ignored=True),
    Param("Debug", "switch", aliases=("db",), ignored=True),
    Param("ErrorAction", aliases=("ea",), choices=ACTION_PREFERENCES),
    Param("WarningAction", aliases=("wa",), choices=ACTION_PREFERENCES),
    Param("InformationAction", aliases=("infa",), choices=ACTION_PREFERENCES, ignored=True),
    Param("ErrorVariable", aliases=("ev",), ignored=True),
    Param("WarningVariable", aliases=("wv",), ignored=True),
    Param("InformationVariable", aliases=("iv",), ignored=True),
    Param("OutVariable", aliases=("ov",)),
    Param("OutBuffer", "int", aliases=("ob",), ignored=True),
    Param("PipelineVariable", aliases=("pv",), ignored=True),
)
SHOULD_PROCESS_PARAMETERS: tuple[Param, ...] = (
    Param("WhatIf", "switch", aliases=("wi",)),
    # -Confirm:$false asks for what this shell does anyway (no prompt); -Confirm asks for a
    # prompt this shell cannot give, so it refuses rather than act unasked.
    Param(
        "Confirm",
        "switch",
        aliases=("cf",),
        refused="this shell never asks for confirmation, so it cannot run the command only "
        "after asking. Run the line without -Confirm (or with -Confirm:$false) once you are "
        "sure, or first with -WhatIf to see what it would do.",
    ),
)
COMMON_NAMES = frozenset(p.name for p in COMMON_PARAMETERS + SHOULD_PROCESS_PARAMETERS)


@dataclass(frozen=True)
class Signature:
    """A cmdlet's parameters (the common ones are added here)."""

    params: tuple[Param, ...]
    default_set: str | None = None
    should_process: bool = False
    all_params: tuple[Param, ...] = field(init=False)

    def __post_init__(self) -> None:
        common = COMMON_PARAMETERS + (SHOULD_PROCESS_PARAMETERS if self.should_process else ())
        object.__setattr__(self, "all_params", self.params + common)
        seen: set[str] = set()
        for param in self.all_params:
            for name in param.all_names:
                if name.lower() in seen:
                    raise ValueError(f"parameter name {name} declared twice")
                seen.add(name.lower())

    @property
    def sets(self) -> tuple[str, ...]:
        names: list[str] = []
        for param in self.params:
            for name in param.sets:
                if name not in names:
                    names.append(name)
        if isinstance(self.default_set, str) and self.default_set not in names and names:
            names.insert(0, self.default_set)
        return tuple(names) or (ALL_SETS,)

    def pipeline_param(self) -> Param | None:
        return next((p for p in self.params if p.pipeline), None)

    def lookup(self, typed: str, *, start: int | None = None, end: int | None = None) -> Param:
        """The parameter ``-typed`` names: exact name or alias, else a unique prefix."""
        lower = typed.lower()
        for param in self.all_params:
            if any(n.lower() == lower for n in param.all_names):
                return param
        matches = [
            p for p in self.all_params if any(n.lower().startswith(lower) for n in p.all_names)
        ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise BindingError(
                f"A parameter cannot be found that matches parameter name '{typed}'.",
                error_id="NamedParameterNotFound",
                start=start,
                end=end,
            )
        raise BindingError(
            f"Parameter cannot be processed because the parameter name '{typed}' is ambiguous. "
            "Possible matches include: " + " ".join(f"-{p.name}" for p in matches) + ".",
            error_id="AmbiguousParameter",
            start=start,
            end=end,
        )


# ---------------------------------------------------------------------- arguments


@dataclass(frozen=True)
class NamedArgument:
    """``-name`` with its colon value (``has_value``) or without."""

    name: str
    value: Any = None
    has_value: bool = False
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class PositionalArgument:
    value: Any
    start: int | None = None
    end: int | None = None


Argument = NamedArgument | PositionalArgument


@dataclass
class BoundArguments:
    """The result of binding: canonical parameter name -> converted value."""

    values: dict[str, Any]
    parameter_set: str

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def flag(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def with_value(self, name: str, value: Any) -> BoundArguments:
        return BoundArguments({**self.values, name: value}, self.parameter_set)


def bind(
    signature: Signature,
    arguments: Sequence[Argument],
    *,
    expects_input: bool = False,
) -> BoundArguments:
    """Bind one command's arguments. ``expects_input``: the command is fed by a pipeline,
    so a mandatory pipeline parameter may be left for the input to fill."""
    values: dict[str, Any] = {}
    where: dict[str, tuple[int | None, int | None]] = {}
    positional: list[PositionalArgument] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if isinstance(argument, PositionalArgument):
            positional.append(argument)
            continue
        param = signature.lookup(argument.name, start=argument.start, end=argument.end)
        if param.name in values:
            raise BindingError(
                f"Cannot bind parameter because parameter '{param.name}' is specified more than "
                "once. To provide multiple values to parameters that can accept multiple values, "
                'use the array syntax. For example, "-parameter value1,value2,value3".',
                error_id="ParameterAlreadyBound",
                start=argument.start,
                end=argument.end,
            )
        if argument.has_value:
            value = argument.value
            span = (argument.start, argument.end)
        elif param.type == "switch":
            value, span = True, (argument.start, argument.end)
        else:
            following = arguments[index] if index < len(arguments) else None
            if not isinstance(following, PositionalArgument):
                raise BindingError(
                    f"Missing an argument for parameter '{param.name}'. Specify a parameter of "
                    f"type '{param.type_name}' and try again.",
                    error_id="MissingArgument",
                    start=argument.start,
                    end=argument.end,
                )
            index += 1
            value, span = following.value, (argument.start, following.end)
        values[param.name] = convert(param, value, start=span[0], end=span[1])
        where[param.name] = span

    remaining = next((p for p in signature.params if p.remaining), None)
    by_position = sorted(
        (
            p
            for p in signature.params
            if p.position is not None and p.name not in values and not p.remaining
        ),
        key=lambda p: p.position or 0,
    )
    for argument in positional:
        target = next((p for p in by_position if p.name not in values), None)
        if target is None and remaining is not None and remaining.name not in where:
            rest = list(values.get(remaining.name) or [])
            rest.append(argument.value)
            values[remaining.name] = rest
            continue
        if target is None:
            raise BindingError(
                "A positional parameter cannot be found that accepts argument "
                f"'{_describe(argument.value)}'.",
                error_id="PositionalParameterNotFound",
                start=argument.start,
                end=argument.end,
            )
        values[target.name] = convert(
            target, argument.value, start=argument.start, end=argument.end
        )
        where[target.name] = (argument.start, argument.end)
    chosen = resolve_set(signature, values, expects_input=expects_input)
    return BoundArguments(values, chosen)


def resolve_set(
    signature: Signature, values: Mapping[str, Any], *, expects_input: bool = False
) -> str:
    """The parameter set the bound names select; its mandatory parameters must be bound."""
    bound = [p for p in signature.params if p.name in values]
    candidates = [s for s in signature.sets if all(p.in_set(s) for p in bound)]
    if not candidates:
        raise BindingError(
            "Parameter set cannot be resolved using the specified named parameters. One or more "
            "parameters issued cannot be used together or an insufficient number of parameters "
            "were provided.",
            error_id="AmbiguousParameterSet",
        )

    def missing(set_name: str) -> list[Param]:
        return [
            p
            for p in signature.params
            if p.mandatory_in(set_name)
            and p.name not in values
            and not (expects_input and p.pipeline)
        ]

    if len(candidates) > 1:
        complete = [s for s in candidates if not missing(s)]
        if signature.default_set in complete:
            return signature.default_set
        if complete:
            return complete[0]
    chosen = signature.default_set if signature.default_set in candidates else candidates[0]
    assert chosen is not None
    absent = missing(chosen)
    if absent:
        names = " ".join(p.name for p in absent)
        raise BindingError(
            f"Cannot process command because of one or more missing mandatory parameters: {names}.",
            error_id="MissingMandatoryParameter",
        )
    return chosen


def missing_mandatory(signature: Signature, bound: BoundArguments) -> list[str]:
    """Mandatory parameters of the bound set still unset (after pipeline input bound)."""
    return [
        p.name
        for p in signature.params
        if p.mandatory_in(bound.parameter_set) and p.name not in bound.values
    ]


# ---------------------------------------------------------------------- conversion


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "System.Object[]"
    return to_ps_string(value)


_DATE_FORMATS = (
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M:%S",
    "%B %d, %Y",
    "%B %d, %Y %I:%M %p",
    "%B %d, %Y %I:%M:%S %p",
    "%d %B %Y",
    "%A, %B %d, %Y %I:%M:%S %p",
)


def parse_datetime(text: str) -> datetime | None:
    """A date as PowerShell converts a string to [datetime] (invariant culture: month first),
    or ISO 8601. A time without an offset is UTC, like everywhere in customerkey."""
    value = text.strip()
    if not value:
        return None
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        for pattern in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, pattern)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_INT = re.compile(r"^[+-]?(\d+|0x[0-9a-fA-F]+)$")
_GUID = re.compile(
    r"^(\{)?[0-9a-f]{8}(-?)[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12}(?(1)\})$", re.I
)


def _cannot_convert(
    param: Param, value: Any, detail: str, start: int | None, end: int | None
) -> BindingError:
    return BindingError(
        f"Cannot bind parameter '{param.name}'. Cannot convert value \"{_describe(value)}\" to "
        f'type "{param.type_name}". Error: "{detail}"',
        error_id="CannotConvertArgumentNoMessage",
        start=start,
        end=end,
    )


def _scalar_string(param: Param, value: Any, start: int | None, end: int | None) -> str:
    if isinstance(value, list | tuple):
        if len(value) == 1:
            return _scalar_string(param, value[0], start, end)
        raise BindingError(
            f"Cannot convert 'System.Object[]' to the type 'System.String' required by parameter "
            f"'{param.name}'. Specified method is not supported.",
            error_id="CannotConvertArgument",
            start=start,
            end=end,
        )
    return to_ps_string(value)


def _validate_choice(param: Param, text: str, start: int | None, end: int | None) -> str:
    if not param.choices:
        return text
    for choice in param.choices:
        if choice.lower() == text.lower():
            return choice
    raise BindingError(
        f"Cannot validate argument on parameter '{param.name}'. The argument \"{text}\" does not "
        f'belong to the set "{",".join(param.choices)}" specified by the ValidateSet '
        "attribute. Supply an argument that is in the set and then try the command again.",
        error_id="ParameterArgumentValidationError",
        start=start,
        end=end,
    )


def convert(param: Param, value: Any, *, start: int | None = None, end: int | None = None) -> Any:
    """``value`` as the parameter's type, or BindingError in PowerShell's words."""
    if value is None:
        if param.type == "switch":
            return False
        if param.allow_null:
            return None
        if param.mandatory:
            raise BindingError(
                f"Cannot bind argument to parameter '{param.name}' because it is null.",
                error_id="ParameterArgumentValidationErrorNullNotAllowed",
                start=start,
                end=end,
            )
        return None
    kind = param.type
    if kind in ("switch", "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return value != 0
        if isinstance(value, list | tuple) and len(value) == 1:
            return convert(param, value[0], start=start, end=end)
        raise BindingError(
            f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert "
            f'value "{type_label(value)}" to type "{param.type_name}". Boolean parameters accept '
            "only Boolean values and numbers, such as $True, $False, 1 or 0.",
            error_id="ParameterArgumentTransformationError",
            start=start,
            end=end,
        )
    if kind == "int":
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return round(value)
        if isinstance(value, str) and _INT.match(value.strip()):
            return int(value.strip(), 0) if "x" in value.lower() else int(value.strip())
        raise _cannot_convert(param, value, "Input string was not in a correct format.", start, end)
    if kind == "datetime":
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            parsed = parse_datetime(value)
            if parsed is not None:
                return parsed
        raise _cannot_convert(
            param, value, "String was not recognized as a valid DateTime.", start, end
        )
    if kind == "guid":  # as .NET parses one: 32 hex digits, dashes and braces optional
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and _GUID.match(value.strip()):
            return str(uuid.UUID(value.strip()))
        raise _cannot_convert(
            param,
            value,
            "Guid should contain 32 digits with 4 dashes (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).",
            start,
            end,
        )
    if kind == "hashtable":
        if isinstance(value, Mapping):
            return dict(value)
        raise BindingError(
            f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert "
            f'the "{_describe(value)}" value of type "{type_label(value)}" to type '
            '"System.Collections.Hashtable".',
            error_id="ParameterArgumentTransformationError",
            start=start,
            end=end,
        )
    if kind == "string[]":
        items = list(value) if isinstance(value, list | tuple) else [value]
        texts = [_scalar_string(param, item, start, end) for item in items]
        return [_validate_choice(param, t, start, end) for t in texts]
    if kind == "string":
        text = _scalar_string(param, value, start, end)
        if text == "" and param.mandatory and not param.allow_null:
            raise BindingError(
                f"Cannot bind argument to parameter '{param.name}' because it is an empty string.",
                error_id="ParameterArgumentValidationErrorEmptyStringNotAllowed",
                start=start,
                end=end,
            )
        return _validate_choice(param, text, start, end)
    return value  # object


def type_label(value: Any) -> str:
    """The .NET type name PowerShell would name for a value in a message."""
    if isinstance(value, bool):
        return "System.Boolean"
    if isinstance(value, int):
        return "System.Int32"
    if isinstance(value, float):
        return "System.Double"
    if isinstance(value, str):
        return "System.String"
    if isinstance(value, datetime):
        return "System.DateTime"
    if isinstance(value, Mapping):
        return "System.Collections.Hashtable"
    if isinstance(value, list | tuple):
        return "System.Object[]"
    if isinstance(value, PSObject):
        return value.type_name
    return "System.Object"
