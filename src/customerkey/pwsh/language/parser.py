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

This module owns the grammar; the character level (``Scanner``, ``ParseError``) is in
``lexer``, the tree it builds in ``syntax``. The grammar is one recursive-descent class whose
rules call each other (an argument may hold a parenthesized pipeline, a string a
subexpression), so it stays whole rather than being cut between mutually recursive rules.

Length: one recursive-descent grammar; its productions call each other, so splitting them across
modules would only add indirection (the lexer and the tree already live apart).
"""

from __future__ import annotations

from customerkey.pwsh.language.lexer import (
    BAREWORD_END,
    DASHES,
    DOUBLE_QUOTES,
    ESCAPES,
    NEWLINES,
    QUOTES,
    SINGLE_QUOTES,
    SPACES,
    UNSUPPORTED,
    UNSUPPORTED_PLURAL,
    Scanner,
    is_name_char,
    is_parameter_start,
)
from customerkey.pwsh.language.syntax import (
    ArrayLiteral,
    Assignment,
    Command,
    CommandParameter,
    ExpandableString,
    Expression,
    HashLiteral,
    IndexAccess,
    MemberAccess,
    Pipeline,
    Script,
    Statement,
    StatementBlock,
    StringLiteral,
    SubExpression,
)


def parse(source: str) -> Script:
    """Parse a whole script (one line or many); raises ParseError."""
    return Script(source, _Parser(source).script())


class _Parser(Scanner):
    """The grammar: statements, pipelines, commands, expressions."""

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
        if self.peek() == "$" and (is_name_char(self.peek(1)) or self.peek(1) == "{"):
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

    def parameter(self) -> CommandParameter:
        start = self.pos
        self.pos += 1
        name_start = self.pos
        while self.pos < len(self.src) and (
            is_name_char(self.src[self.pos]) or self.src[self.pos] in "?-"
        ):
            self.pos += 1
        name = self.src[name_start : self.pos]
        if self.peek() != ":":
            if not self.at_end and self.peek() not in BAREWORD_END:
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
        if char == "$" and (is_name_char(self.peek(1)) or self.peek(1) in "{?"):
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
            if char in BAREWORD_END:
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
            if char == "$" and (is_name_char(self.peek(1)) or self.peek(1) == "{"):
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
            if is_name_char(self.peek(1)) or self.peek(1) in "{?":
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
            if char == "." and (is_name_char(self.peek(1)) or self.peek(1) in QUOTES):
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
                    while self.pos < len(self.src) and is_name_char(self.src[self.pos]):
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
                    is_name_char(self.src[self.pos]) or self.src[self.pos] in "-."
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

    # ------------------------------------------------------------ strings

    def string(self) -> StringLiteral | ExpandableString:
        if self.peek() in SINGLE_QUOTES:
            return self.single_quoted()
        return self.double_quoted()

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
                text.append(ESCAPES.get(escaped, escaped))
                self.pos += 2
                continue
            if char == "$":
                after = self.peek(1)
                if after == "(":
                    parts.append("".join(text))
                    text = []
                    parts.append(self.block(array=False))
                    continue
                if is_name_char(after) or after in "{?":
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
