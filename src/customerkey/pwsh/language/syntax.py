"""The syntax tree of the PowerShell subset the cmdlet shell runs: what ``parse`` returns.

Pure data (frozen dataclasses, offsets into the source for error messages), no behaviour;
``customerkey.pwsh.engine.session`` evaluates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class Node:
    start: int
    end: int


@dataclass(frozen=True)
class StringLiteral(Node):
    value: str
    bare: bool = False  # a bareword in argument mode (PowerShell's generic token)


@dataclass(frozen=True)
class ExpandableString(Node):
    """A double-quoted string (or a bareword) with ``$var`` / ``$(...)`` parts in it."""

    parts: tuple[str | Expression, ...]


@dataclass(frozen=True)
class NumberLiteral(Node):
    value: int | float


@dataclass(frozen=True)
class VariableRef(Node):
    name: str


@dataclass(frozen=True)
class MemberAccess(Node):
    target: Expression
    member: str


@dataclass(frozen=True)
class IndexAccess(Node):
    target: Expression
    index: Expression


@dataclass(frozen=True)
class ArrayLiteral(Node):
    items: tuple[Expression, ...]


@dataclass(frozen=True)
class SubExpression(Node):
    """``( pipeline )``: one value, or an array when the pipeline gives several."""

    pipeline: Pipeline


@dataclass(frozen=True)
class StatementBlock(Node):
    """``@( ... )`` (always an array) or ``$( ... )``."""

    statements: tuple[Statement, ...]
    array: bool


@dataclass(frozen=True)
class HashLiteral(Node):
    entries: tuple[tuple[Expression, Pipeline], ...]


Expression: TypeAlias = (
    StringLiteral
    | ExpandableString
    | NumberLiteral
    | VariableRef
    | MemberAccess
    | IndexAccess
    | ArrayLiteral
    | SubExpression
    | StatementBlock
    | HashLiteral
)


@dataclass(frozen=True)
class CommandParameter(Node):
    """``-Name``, ``-Name:value``. ``name`` is as typed, without its dash."""

    name: str
    argument: Expression | None
    colon: bool


@dataclass(frozen=True)
class Command(Node):
    name: str
    name_end: int
    elements: tuple[CommandParameter | Expression, ...]


@dataclass(frozen=True)
class Pipeline(Node):
    elements: tuple[Command | Expression, ...]


@dataclass(frozen=True)
class Assignment(Node):
    variable: str
    value: Pipeline


Statement: TypeAlias = Pipeline | Assignment


@dataclass(frozen=True)
class Script:
    source: str
    statements: tuple[Statement, ...]
