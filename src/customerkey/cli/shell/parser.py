"""Tokenizer and parser for the PowerShell subset the cmdlet shell runs: pure, no I/O.

``parse(source)`` turns a script into a ``Script`` of statements, or raises ``ParseError``
with a PowerShell-like message and the offset it refers to (nothing of a script that does not
parse is run, as in PowerShell). What is understood:

- statements separated by newlines or ``;``; ``#`` and ``<# ... #>`` comments; a backtick at
  the end of a line continues it; so does a trailing ``|`` or ``,``
- a line that begins with ``-Param`` continues the command of the line before it (PowerShell
  itself would not, but Microsoft's Customer Key documentation is written that way)
- pipelines ``a | b | c``; the first element may be an expression (``$k | fl``)
- commands with named parameters (``-Name value``, ``-Name:value``, switches ``-Force``),
  positional arguments, any dash PowerShell accepts (``-``, en dash, em dash)
- arguments: barewords (``Contoso-VaultA1``, ``12/27/2016``), single-quoted strings (``''``
  escapes a quote), double-quoted strings with ``$var``, ``${var}``, ``$(...)`` and backtick
  escapes, ``$true``/``$false``/``$null``, variables with ``.Property`` and ``[index]``,
  ``(pipeline)``, ``@(...)``, ``$(...)``, hash tables ``@{a='b'; c=1}``, and arrays ``a,b``
- expressions at the start of a statement: the same primaries, numbers, and ``,`` arrays
- assignments ``$name = <pipeline>``

Operators (``-eq``, ``+``...), script blocks, type literals, method calls and redirection are
refused with an error that says so, rather than misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

DASHES = "-\u2013\u2014\u2015"
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
QUOTES = SINGLE_QUOTES + DOUBLE_QUOTES
SPACES = " \t\f\v\u00a0\ufeff"
NEWLINES = "\r\n"
# Characters that end a bareword (a "generic token") in argument mode.
_BAREWORD_END = set(SPACES + NEWLINES + ";|,(){}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f"}
_ESCAPES |= {"v": "\v", "e": "\x1b"}
_NUMBER_SUFFIXES = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4, "pb": 1024**5}
UNSUPPORTED = "is not supported by the customerkey shell"
UNSUPPORTED_PLURAL = "are not supported by the customerkey shell"
_END = "\x00"  # what peek() returns past the end


class ParseError(Exception):
    """A script that does not parse. ``incomplete`` when more input could complete it (an
    open quote or parenthesis, a trailing pipe): the interactive shell then asks for more."""

    def __init__(
        self,
        message: str,
        source: str,
        offset: int,
        *,
        error_id: str,
        length: int = 1,
        incomplete: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.offset = max(0, min(offset, len(source)))
        self.length = max(1, length)
        self.error_id = error_id
        self.incomplete = incomplete

    @property
    def line(self) -> int:
        return self.source.count("\n", 0, self.offset) + 1

    @property
    def column(self) -> int:
        return self.offset - (self.source.rfind("\n", 0, self.offset) + 1) + 1

    def render(self, file: str | None = None) -> str:
        """The error as PowerShell prints a parser error."""
        where = f"At {file}:{self.line}" if file else f"At line:{self.line}"
        return "\n".join(
            [
                f"{where} char:{self.column}",
                *caret_lines(self.source, self.offset, self.length),
                self.message,
                "    + CategoryInfo          : ParserError: (:) [], "
                "ParentContainsErrorRecordException",
                f"    + FullyQualifiedErrorId : {self.error_id}",
            ]
        )

    def __str__(self) -> str:
        return f"{self.message} (line {self.line}, char {self.column})"


def caret_lines(source: str, offset: int, length: int) -> list[str]:
    """``+ <the source line>`` and ``+ <spaces>~~~`` under ``length`` characters at ``offset``."""
    start = source.rfind("\n", 0, offset) + 1
    end = source.find("\n", offset)
    end = len(source) if end < 0 else end
    text = source[start:end].rstrip("\r")
    column = offset - start
    width = max(1, min(length, len(text) - column))
    return [f"+ {text}", "+ " + " " * column + "~" * width]


# ---------------------------------------------------------------------- the syntax tree


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


def parse(source: str) -> Script:
    """Parse a whole script (one line or many); raises ParseError."""
    return Script(source, _Parser(source).script())


def is_parameter_start(text: str, index: int) -> bool:
    """Does ``text[index]`` begin a parameter token (a dash and then a letter)?"""
    return (
        index + 1 < len(text)
        and text[index] in DASHES
        and (text[index + 1].isalpha() or text[index + 1] in "_?")
    )


def _is_name_char(char: str) -> bool:
    return char.isalnum() or char == "_"


# ---------------------------------------------------------------------- the parser


class _Parser:
    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0

    # ------------------------------------------------------------ helpers

    def error(
        self,
        message: str,
        offset: int | None = None,
        *,
        error_id: str,
        length: int = 1,
        incomplete: bool = False,
    ) -> ParseError:
        return ParseError(
            message,
            self.src,
            self.pos if offset is None else offset,
            error_id=error_id,
            length=length,
            incomplete=incomplete,
        )

    def peek(self, ahead: int = 0) -> str:
        """The character ``ahead`` of the position, or ``_END`` (in no character class)."""
        index = self.pos + ahead
        return self.src[index] if index < len(self.src) else _END

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.src)

    def skip_space(self, *, newlines: bool = False) -> None:
        """Skip blanks, comments and backtick line continuations (and newlines if asked)."""
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char in SPACES:
                self.pos += 1
            elif char == "`" and self.pos + 1 < len(src) and src[self.pos + 1] in NEWLINES:
                self.pos += 2
                if src[self.pos - 1] == "\r" and self.peek() == "\n":
                    self.pos += 1
            elif char == "<" and self.peek(1) == "#":
                end = src.find("#>", self.pos + 2)
                if end < 0:
                    raise self.error(
                        "Missing closing '#>' of a block comment.",
                        error_id="MissingEndOfBlockComment",
                        length=2,
                        incomplete=True,
                    )
                self.pos = end + 2
            elif char == "#":
                while self.pos < len(src) and src[self.pos] not in NEWLINES:
                    self.pos += 1
            elif newlines and char in NEWLINES:
                self.pos += 1
            else:
                return

    def token_text(self, offset: int | None = None) -> str:
        """The text of the token at ``offset``, for messages."""
        start = self.pos if offset is None else offset
        end = start
        while end < len(self.src) and self.src[end] not in _BAREWORD_END:
            end += 1
        return self.src[start : max(end, start + 1)]

    def unexpected(self, offset: int | None = None) -> ParseError:
        start = self.pos if offset is None else offset
        text = self.token_text(start)
        return self.error(
            f"Unexpected token '{text}' in expression or statement.",
            start,
            error_id="UnexpectedToken",
            length=len(text),
        )

    # ------------------------------------------------------------ statements

    def script(self) -> tuple[Statement, ...]:
        statements = self.statements(None)
        if not self.at_end:
            raise self.unexpected()
        return statements

    def statements(self, closer: str | None) -> tuple[Statement, ...]:
        """Statements up to ``closer`` (not consumed) or the end of the input."""
        found: list[Statement] = []
        while True:
            self.skip_space(newlines=True)
            while self.peek() == ";":
                self.pos += 1
                self.skip_space(newlines=True)
            if self.at_end or (closer is not None and self.peek() == closer):
                return tuple(found)
            found.append(self.statement())
            self.skip_space()
            char = self.peek()
            if self.at_end or char in NEWLINES or char == ";":
                continue
            if closer is not None and char == closer:
                return tuple(found)
            if char == "=":
                raise self.error(
                    "Only a variable can be assigned to ($name = ...).",
                    error_id="InvalidLeftHandSide",
                )
            if char in "})":
                raise self.unexpected()
            raise self.unexpected()

    def statement(self) -> Statement:
        start = self.pos
        if self.peek() == "$" and (_is_name_char(self.peek(1)) or self.peek(1) == "{"):
            name = self.variable_name()
            self.skip_space()
            if self.peek() == "=" and self.peek(1) != "=":
                equals = self.pos
                self.pos += 1
                self.skip_space(newlines=True)
                if self.at_end or self.peek() in ";)}":
                    raise self.error(
                        "You must provide a value expression on the right-hand side of the "
                        "'=' operator.",
                        equals,
                        error_id="ExpectedValueExpression",
                        incomplete=self.at_end,
                    )
                value = self.pipeline()
                return Assignment(start, value.end, name, value)
            self.pos = start
        return self.pipeline()

    def pipeline(self) -> Pipeline:
        start = self.pos
        elements: list[Command | Expression] = [self.pipe_element(first=True)]
        while True:
            self.skip_space()
            if self.peek() != "|":
                break
            bar = self.pos
            if self.peek(1) == "|":
                raise self.error(
                    "The token '||' is not a valid statement separator in this version.",
                    error_id="InvalidEndOfLine",
                    length=2,
                )
            self.pos += 1
            self.skip_space(newlines=True)
            if self.at_end or self.peek() in ";|)}":
                raise self.error(
                    "An empty pipe element is not allowed.",
                    bar,
                    error_id="EmptyPipeElement",
                    incomplete=self.at_end,
                )
            elements.append(self.pipe_element(first=False))
        return Pipeline(start, self.pos, tuple(elements))

    def starts_expression(self) -> bool:
        char, after = self.peek(), self.peek(1)
        if char in QUOTES or char in "$([{":
            return True
        if char == "@":
            return after in "({" or after in QUOTES
        if char.isdigit():
            return True
        return char in DASHES + "." and after.isdigit()

    def pipe_element(self, *, first: bool) -> Command | Expression:
        if self.peek() == "&":
            raise self.error(
                f"The call operator '&' {UNSUPPORTED}; write the cmdlet's name.",
                error_id="CallOperatorNotSupported",
            )
        if self.starts_expression():
            if not first:
                raise self.error(
                    "Expressions are only allowed as the first element of a pipeline.",
                    error_id="ExpressionsMustBeFirstInPipeline",
                    length=len(self.token_text()),
                )
            return self.expression()
        return self.command()

    # ------------------------------------------------------------ commands

    def command(self) -> Command:
        start = self.pos
        char = self.peek()
        if char in "<>":
            raise self.redirection()
        if char in DASHES and not is_parameter_start(self.src, self.pos):
            raise self.unexpected()
        name = self.bareword_text()
        if not name:
            raise self.unexpected()
        name_end = self.pos
        elements: list[CommandParameter | Expression] = []
        while True:
            self.skip_space()
            char = self.peek()
            if self.at_end:
                break
            if char in NEWLINES:
                if self.continues_on_next_line():
                    continue
                break
            if char in ";|)}":
                break
            if char in "<>" or (char in "0123456*" and self.peek(1) == ">"):
                raise self.redirection()
            if char == "&":
                raise self.error(f"The '&' operator {UNSUPPORTED}.", error_id="AmpersandNotAllowed")
            if is_parameter_start(self.src, self.pos):
                elements.append(self.parameter())
            else:
                elements.append(self.argument())
        end = elements[-1].end if elements else name_end
        return Command(start, end, name, name_end, tuple(elements))

    def redirection(self) -> ParseError:
        if self.peek() == "<":
            return self.error(
                "The '<' operator is reserved for future use.",
                error_id="RedirectionNotSupported",
            )
        return self.error(f"Redirection ('>') {UNSUPPORTED}.", error_id="RedirectionNotSupported")

    def continues_on_next_line(self) -> bool:
        """At a newline inside a command: does the next line begin with ``-Param``?"""
        index = self.pos
        if self.src.startswith("\r\n", index):
            index += 2
        else:
            index += 1
        while index < len(self.src) and self.src[index] in SPACES:
            index += 1
        if is_parameter_start(self.src, index):
            self.pos = index
            return True
        return False

    def parameter(self) -> CommandParameter:
        start = self.pos
        self.pos += 1
        name_start = self.pos
        while self.pos < len(self.src) and (
            _is_name_char(self.src[self.pos]) or self.src[self.pos] in "?-"
        ):
            self.pos += 1
        name = self.src[name_start : self.pos]
        if self.peek() != ":":
            if not self.at_end and self.peek() not in _BAREWORD_END:
                text = self.token_text(start)
                raise self.error(
                    f"Unexpected text in parameter '{text}'; put a blank between a parameter "
                    "and its value, or a colon (-Name:value).",
                    start,
                    error_id="UnexpectedToken",
                    length=len(text),
                )
            return CommandParameter(start, self.pos, name, None, False)
        self.pos += 1  # the colon
        self.skip_space()
        if (
            self.at_end
            or self.peek() in NEWLINES + ";|)}"
            or is_parameter_start(self.src, self.pos)
        ):
            return CommandParameter(start, self.pos, name, None, True)
        argument = self.argument()
        return CommandParameter(start, argument.end, name, argument, True)

    def argument(self) -> Expression:
        """One argument in argument mode: a primary, or several joined by commas."""
        start = self.pos
        items = [self.argument_primary()]
        while True:
            save = self.pos
            self.skip_space()
            if self.peek() != ",":
                self.pos = save
                break
            comma = self.pos
            self.pos += 1
            self.skip_space(newlines=True)
            if self.at_end or self.peek() in ";|)}," or is_parameter_start(self.src, self.pos):
                raise self.error(
                    "Missing expression after ','.",
                    comma,
                    error_id="MissingExpressionAfterToken",
                    incomplete=self.at_end,
                )
            items.append(self.argument_primary())
        if len(items) == 1:
            return items[0]
        return ArrayLiteral(start, self.pos, tuple(items))

    def argument_primary(self) -> Expression:
        char = self.peek()
        if char in QUOTES:
            return self.string()
        if char == "$" and (_is_name_char(self.peek(1)) or self.peek(1) in "{?"):
            return self.postfix(self.variable())
        if char == "$" and self.peek(1) == "(":
            return self.postfix(self.block(array=False))
        if char == "(":
            return self.postfix(self.parenthesized())
        if char == "@" and self.peek(1) == "(":
            return self.postfix(self.block(array=True))
        if char == "@" and self.peek(1) == "{":
            return self.hash_literal()
        if char == "{":
            raise self.script_block()
        if char == "[":
            raise self.type_literal()
        return self.bareword()

    def bareword_text(self) -> str:
        start = self.pos
        word = self.bareword()
        if isinstance(word, StringLiteral):
            return word.value
        self.pos = start
        raise self.error("A command name cannot contain variables.", error_id="UnexpectedToken")

    def bareword(self) -> Expression:
        """A generic token: everything up to a blank or one of ``;|,(){}``. Quoted pieces
        and ``$var`` inside it are honoured (``Key$n``, ``a"b c"``)."""
        start = self.pos
        parts: list[str | Expression] = []
        text: list[str] = []
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char in _BAREWORD_END:
                break
            if char == "`":
                if self.pos + 1 >= len(src) or src[self.pos + 1] in NEWLINES:
                    break
                text.append(src[self.pos + 1])
                self.pos += 2
                continue
            if char in QUOTES:
                quoted = self.string()
                if isinstance(quoted, StringLiteral):
                    text.append(quoted.value)
                else:
                    parts.append("".join(text))
                    text = []
                    parts.extend(quoted.parts)
                continue
            if char == "$" and (_is_name_char(self.peek(1)) or self.peek(1) == "{"):
                parts.append("".join(text))
                text = []
                parts.append(self.variable())
                continue
            text.append(char)
            self.pos += 1
        if self.pos == start:
            raise self.unexpected()
        parts.append("".join(text))
        literal = [p for p in parts if p != ""]
        if all(isinstance(p, str) for p in literal):
            return StringLiteral(start, self.pos, "".join(str(p) for p in literal), bare=True)
        return ExpandableString(start, self.pos, tuple(literal))

    # ------------------------------------------------------------ expressions

    def expression(self) -> Expression:
        start = self.pos
        items = [self.unary()]
        while True:
            save = self.pos
            self.skip_space()
            char = self.peek()
            if char == ",":
                comma = self.pos
                self.pos += 1
                self.skip_space(newlines=True)
                if self.at_end or self.peek() in ";|)},":
                    raise self.error(
                        "Missing expression after ','.",
                        comma,
                        error_id="MissingExpressionAfterToken",
                        incomplete=self.at_end,
                    )
                items.append(self.unary())
                continue
            if is_parameter_start(self.src, self.pos) or (
                char in "+*/%" or (char in DASHES and self.peek(1) in SPACES + "$(0123456789")
            ):
                text = self.token_text()
                raise self.error(
                    f"The operator '{text}' {UNSUPPORTED}: it runs cmdlets, variables and "
                    "properties, not expressions.",
                    error_id="OperatorNotSupported",
                    length=len(text),
                )
            self.pos = save
            break
        if len(items) == 1:
            return items[0]
        return ArrayLiteral(start, self.pos, tuple(items))

    def unary(self) -> Expression:
        return self.postfix(self.primary())

    def primary(self) -> Expression:
        char = self.peek()
        if char in QUOTES:
            return self.string()
        if char == "$":
            if self.peek(1) == "(":
                return self.block(array=False)
            if _is_name_char(self.peek(1)) or self.peek(1) in "{?":
                return self.variable()
            raise self.unexpected()
        if char == "(":
            return self.parenthesized()
        if char == "@":
            if self.peek(1) == "(":
                return self.block(array=True)
            if self.peek(1) == "{":
                return self.hash_literal()
            raise self.error(
                f"Here-strings (@' and @\") {UNSUPPORTED_PLURAL}.",
                error_id="HereStringNotSupported",
                length=2,
            )
        if char == "{":
            raise self.script_block()
        if char == "[":
            raise self.type_literal()
        if char.isdigit() or (char in DASHES + "." and self.peek(1).isdigit()):
            return self.number()
        raise self.unexpected()

    def postfix(self, target: Expression) -> Expression:
        """``.Member`` and ``[index]`` written right after a primary (no blank between)."""
        while True:
            char = self.peek()
            if char == "." and (_is_name_char(self.peek(1)) or self.peek(1) in QUOTES):
                self.pos += 1
                if self.peek() in QUOTES:
                    name_node = self.string()
                    if not isinstance(name_node, StringLiteral):
                        raise self.error(
                            "A member name cannot contain variables.",
                            name_node.start,
                            error_id="UnexpectedToken",
                        )
                    member = name_node.value
                else:
                    name_start = self.pos
                    while self.pos < len(self.src) and _is_name_char(self.src[self.pos]):
                        self.pos += 1
                    member = self.src[name_start : self.pos]
                if self.peek() == "(":
                    raise self.error(
                        f"Method invocation ('.{member}()') {UNSUPPORTED}.",
                        error_id="MethodInvocationNotSupported",
                    )
                target = MemberAccess(target.start, self.pos, target, member)
            elif char == "[":
                bracket = self.pos
                self.pos += 1
                self.skip_space(newlines=True)
                if self.peek() == "]":
                    raise self.error(
                        "Array index expression is missing or not valid.",
                        bracket,
                        error_id="MissingArrayIndexExpression",
                    )
                index = self.expression()
                self.skip_space(newlines=True)
                if self.peek() != "]":
                    raise self.error(
                        "Missing ']' after array index expression.",
                        bracket,
                        error_id="MissingEndSquareBracket",
                        incomplete=self.at_end,
                    )
                self.pos += 1
                target = IndexAccess(target.start, self.pos, target, index)
            elif char == ":" and self.peek(1) == ":":
                raise self.error(
                    f"Static member access ('::') {UNSUPPORTED}.",
                    error_id="StaticMemberNotSupported",
                    length=2,
                )
            else:
                return target

    def number(self) -> NumberLiteral:
        start = self.pos
        if self.peek() in DASHES:
            self.pos += 1
        digits_start = self.pos
        if self.peek() == "0" and self.peek(1) in "xX":
            self.pos += 2
            while self.pos < len(self.src) and self.src[self.pos] in "0123456789abcdefABCDEF":
                self.pos += 1
            value: int | float = int(self.src[digits_start + 2 : self.pos] or "0", 16)
        else:
            while self.peek().isdigit():
                self.pos += 1
            is_float = False
            if self.peek() == "." and self.peek(1).isdigit():
                is_float = True
                self.pos += 1
                while self.peek().isdigit():
                    self.pos += 1
            text = self.src[digits_start : self.pos]
            value = float(text) if is_float else int(text)
        suffix = self.src[self.pos : self.pos + 2].lower()
        if suffix in _NUMBER_SUFFIXES:
            self.pos += 2
            value = value * _NUMBER_SUFFIXES[suffix]
        if _is_name_char(self.peek()):
            raise self.unexpected(start)
        if self.src[start] in DASHES:
            value = -value
        return NumberLiteral(start, self.pos, value)

    def variable_name(self) -> str:
        """After ``$``: ``name``, ``scope:name``, ``{any name}`` or ``?``."""
        self.pos += 1  # the dollar
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            if end < 0:
                raise self.error(
                    "Missing '}' in the variable name.",
                    self.pos - 1,
                    error_id="IncompleteDollarVariableReference",
                    incomplete=True,
                )
            name = self.src[self.pos + 1 : end]
            self.pos = end + 1
            return name
        if self.peek() == "?":
            self.pos += 1
            return "?"
        start = self.pos
        while self.pos < len(self.src) and _is_name_char(self.src[self.pos]):
            self.pos += 1
        if self.peek() == ":" and _is_name_char(self.peek(1)):
            self.pos += 1
            while self.pos < len(self.src) and _is_name_char(self.src[self.pos]):
                self.pos += 1
        return self.src[start : self.pos]

    def variable(self) -> VariableRef:
        start = self.pos
        name = self.variable_name()
        return VariableRef(start, self.pos, name)

    def parenthesized(self) -> SubExpression:
        start = self.pos
        self.pos += 1
        self.skip_space(newlines=True)
        if self.peek() == ")":
            raise self.error(
                "An expression was expected after '('.", start, error_id="ExpectedExpression"
            )
        if self.at_end:
            raise self.error(
                "Missing closing ')' in expression.",
                start,
                error_id="MissingEndParenthesisInExpression",
                incomplete=True,
            )
        inner = self.pipeline()
        self.skip_space(newlines=True)
        if self.peek() != ")":
            if self.at_end:
                raise self.error(
                    "Missing closing ')' in expression.",
                    start,
                    error_id="MissingEndParenthesisInExpression",
                    incomplete=True,
                )
            raise self.unexpected()
        self.pos += 1
        return SubExpression(start, self.pos, inner)

    def block(self, *, array: bool) -> StatementBlock:
        start = self.pos
        self.pos += 2
        body = self.statements(")")
        if self.peek() != ")":
            raise self.error(
                "Missing closing ')' in subexpression.",
                start,
                error_id="MissingEndParenthesisInSubexpression",
                length=2,
                incomplete=True,
            )
        self.pos += 1
        return StatementBlock(start, self.pos, body, array)

    def hash_literal(self) -> HashLiteral:
        start = self.pos
        self.pos += 2
        entries: list[tuple[Expression, Pipeline]] = []
        while True:
            self.skip_space(newlines=True)
            while self.peek() == ";":
                self.pos += 1
                self.skip_space(newlines=True)
            if self.peek() == "}":
                self.pos += 1
                return HashLiteral(start, self.pos, tuple(entries))
            if self.at_end:
                raise self.error(
                    "The hash literal was incomplete.",
                    start,
                    error_id="IncompleteHashLiteral",
                    length=2,
                    incomplete=True,
                )
            key: Expression
            char = self.peek()
            if char in QUOTES:
                key = self.string()
            elif char.isdigit():
                key = self.number()
            else:
                key_start = self.pos
                while self.pos < len(self.src) and (
                    _is_name_char(self.src[self.pos]) or self.src[self.pos] in "-."
                ):
                    self.pos += 1
                if self.pos == key_start:
                    raise self.error(
                        "Missing key before '=' in hash literal.",
                        error_id="MissingHashKey",
                    )
                key = StringLiteral(key_start, self.pos, self.src[key_start : self.pos])
            self.skip_space()
            if self.peek() != "=":
                raise self.error(
                    "Missing '=' operator after key in hash literal.",
                    error_id="MissingEqualsInHashLiteral",
                    incomplete=self.at_end,
                )
            self.pos += 1
            self.skip_space(newlines=True)
            if self.at_end or self.peek() in ";}":
                raise self.error(
                    "Missing statement after '=' in hash literal.",
                    error_id="MissingStatementInHashLiteral",
                    incomplete=self.at_end,
                )
            value = self.pipeline()
            entries.append((key, value))
            self.skip_space()
            if self.peek() not in ";}" + NEWLINES:
                if self.at_end:
                    continue
                raise self.error(
                    "Missing '=' operator after key in hash literal.",
                    error_id="MissingEqualsInHashLiteral",
                )

    def script_block(self) -> ParseError:
        return self.error(
            f"Script blocks ('{{ ... }}') {UNSUPPORTED_PLURAL}.", error_id="ScriptBlock"
        )

    def type_literal(self) -> ParseError:
        match = re.match(r"\[[\w.\[\]]{1,80}\]", self.src[self.pos : self.pos + 82])
        text = match.group(0) if match else "["
        return self.error(
            f"Type literals ('{text}') {UNSUPPORTED_PLURAL}.",
            error_id="TypeLiteralNotSupported",
            length=len(text),
        )

    # ------------------------------------------------------------ strings

    def string(self) -> StringLiteral | ExpandableString:
        if self.peek() in SINGLE_QUOTES:
            return self.single_quoted()
        return self.double_quoted()

    def single_quoted(self) -> StringLiteral:
        start = self.pos
        self.pos += 1
        text: list[str] = []
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char in SINGLE_QUOTES:
                if self.pos + 1 < len(src) and src[self.pos + 1] in SINGLE_QUOTES:
                    text.append("'")
                    self.pos += 2
                    continue
                self.pos += 1
                return StringLiteral(start, self.pos, "".join(text))
            text.append(char)
            self.pos += 1
        raise self.error(
            "The string is missing the terminator: '.",
            start,
            error_id="TerminatorExpectedAtEndOfString",
            length=len(src) - start,
            incomplete=True,
        )

    def double_quoted(self) -> StringLiteral | ExpandableString:
        start = self.pos
        self.pos += 1
        parts: list[str | Expression] = []
        text: list[str] = []
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char in DOUBLE_QUOTES:
                if self.pos + 1 < len(src) and src[self.pos + 1] in DOUBLE_QUOTES:
                    text.append('"')
                    self.pos += 2
                    continue
                self.pos += 1
                parts.append("".join(text))
                literal = [p for p in parts if p != ""]
                if all(isinstance(p, str) for p in literal):
                    return StringLiteral(start, self.pos, "".join(str(p) for p in literal))
                return ExpandableString(start, self.pos, tuple(literal))
            if char == "`" and self.pos + 1 < len(src):
                escaped = src[self.pos + 1]
                text.append(_ESCAPES.get(escaped, escaped))
                self.pos += 2
                continue
            if char == "$":
                after = self.peek(1)
                if after == "(":
                    parts.append("".join(text))
                    text = []
                    parts.append(self.block(array=False))
                    continue
                if _is_name_char(after) or after in "{?":
                    parts.append("".join(text))
                    text = []
                    parts.append(self.variable())
                    continue
            text.append(char)
            self.pos += 1
        raise self.error(
            'The string is missing the terminator: ".',
            start,
            error_id="TerminatorExpectedAtEndOfString",
            length=len(src) - start,
            incomplete=True,
        )
