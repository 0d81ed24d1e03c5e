"""The character level of the PowerShell subset: character classes, ``ParseError`` and its
caret display, and ``Scanner``, the position in the source with the token readers that need
no grammar (blanks and comments, numbers, variable names, single-quoted strings, the refusals
of unsupported syntax). Pure, no I/O.

``customerkey.pwsh.language.parser`` builds the grammar on ``Scanner``: a recursive-descent
parser in PowerShell's argument and expression modes reads tokens and grammar together
(whether ``-x`` is a parameter, a number or an operator depends on the mode), so there is no
separate token stream.
"""

from __future__ import annotations

import re

from customerkey.pwsh.language.syntax import NumberLiteral, StringLiteral, VariableRef

DASHES = "-\u2013\u2014\u2015"
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
QUOTES = SINGLE_QUOTES + DOUBLE_QUOTES
SPACES = " \t\f\v\u00a0\ufeff"
NEWLINES = "\r\n"
# Characters that end a bareword (a "generic token") in argument mode.
BAREWORD_END = set(SPACES + NEWLINES + ";|,(){}")
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f"}
ESCAPES |= {"v": "\v", "e": "\x1b"}
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


def is_parameter_start(text: str, index: int) -> bool:
    """Does ``text[index]`` begin a parameter token (a dash and then a letter)?"""
    return (
        index + 1 < len(text)
        and text[index] in DASHES
        and (text[index + 1].isalpha() or text[index + 1] in "_?")
    )


def is_name_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class Scanner:
    """A position in the source, and the readers of tokens that need no grammar."""

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
        while end < len(self.src) and self.src[end] not in BAREWORD_END:
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
        if is_name_char(self.peek()):
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
        while self.pos < len(self.src) and is_name_char(self.src[self.pos]):
            self.pos += 1
        if self.peek() == ":" and is_name_char(self.peek(1)):
            self.pos += 1
            while self.pos < len(self.src) and is_name_char(self.src[self.pos]):
                self.pos += 1
        return self.src[start : self.pos]

    def variable(self) -> VariableRef:
        start = self.pos
        name = self.variable_name()
        return VariableRef(start, self.pos, name)

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
