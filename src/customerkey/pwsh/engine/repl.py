"""The interactive prompt: prompt_toolkit with history in the home folder and completion of
cmdlet names, parameter names (for the cmdlet being typed) and variables.

A line that is incomplete (an open quote or parenthesis, a trailing ``|``) asks for more with
``>>``, as PowerShell does; so does a line ending in a backtick. A line that begins with
``-Param`` right after a command that failed for want of a mandatory parameter completes that
command (the Customer Key documentation splits commands that way; the failed command ran
nothing, so running it again whole is safe). ``exit`` leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from customerkey.pwsh.language.lexer import DASHES, QUOTES, ParseError, is_parameter_start
from customerkey.pwsh.language.parser import parse

if TYPE_CHECKING:
    from prompt_toolkit.history import History
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from customerkey.pwsh.cmdlets.registry import Registry
    from customerkey.pwsh.engine.session import Session

PROMPT = "PS customerkey> "
CONTINUATION = ">> "


@dataclass(frozen=True)
class CompletionContext:
    kind: str  # "command" | "parameter" | "variable" | "none"
    word: str  # what is typed so far of the word being completed
    command: str | None  # the command the word belongs to


def completion_context(text: str) -> CompletionContext:
    """What the word before the cursor is: a command name, a parameter of which command,
    a variable, or something we do not complete (a value)."""
    segment_start = 0
    quote: str | None = None
    for i, char in enumerate(text):
        if quote is not None:
            if (
                char == quote
                or (quote == '"' and char in "\u201c\u201d\u201e")
                or (quote == "'" and char in "\u2018\u2019")
            ):
                quote = None
            continue
        if char in QUOTES:
            quote = '"' if char in '"\u201c\u201d\u201e' else "'"
        elif char in "|;({\n":
            segment_start = i + 1
    if quote is not None:
        return CompletionContext("none", "", None)
    segment = text[segment_start:]
    words = segment.split()
    ends_blank = segment == "" or segment[-1].isspace()
    word = "" if ends_blank else (words[-1] if words else "")
    if word.startswith("$"):
        return CompletionContext("variable", word, None)
    before = words if ends_blank else words[:-1]
    if not before:
        return CompletionContext("command", word, None)
    command = before[0]
    if word[:1] in DASHES and (len(word) == 1 or word[1].isalpha()):
        return CompletionContext("parameter", word, command)
    return CompletionContext("none", word, command)


class ShellCompleter(Completer):
    def __init__(self, registry: Registry, session: Session | None = None) -> None:
        self.registry = registry
        self.session = session

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        context = completion_context(document.text_before_cursor)
        word = context.word
        if context.kind == "command":
            for name in self.registry.names():
                if name.lower().startswith(word.lower()):
                    yield Completion(name, start_position=-len(word))
        elif context.kind == "parameter" and context.command:
            spec = self.registry.resolve(context.command)
            if spec is None:
                return
            typed = word[1:].lower()
            for param in spec.signature.all_params:
                if param.name.lower().startswith(typed):
                    yield Completion(f"-{param.name}", start_position=-len(word))
        elif context.kind == "variable" and self.session is not None:
            typed = word[1:].lower()
            for name, _ in sorted(self.session.variables.values()):
                if name.lower().startswith(typed) and name != "?":
                    yield Completion(f"${name}", start_position=-len(word))


def needs_more(text: str) -> bool:
    """Is ``text`` an unfinished statement (so the prompt should ask for another line)?"""
    if text.rstrip(" \t").endswith("`"):
        return True
    try:
        parse(text)
    except ParseError as error:
        return error.incomplete
    return False


def run_repl(
    session: Session,
    history_file: Path,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
) -> int:
    """Read, run, print until ``exit`` or end of input; returns the exit code."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    prompt: PromptSession[str] = PromptSession(
        history=history or FileHistory(str(history_file)),
        completer=ShellCompleter(session.registry, session),
        complete_while_typing=False,
        input=input,
        output=output,
    )
    pending: list[str] = []
    unfinished: str | None = None  # a one-statement entry that lacked a mandatory parameter
    while True:
        try:
            line = prompt.prompt(CONTINUATION if pending else PROMPT)
        except KeyboardInterrupt:
            pending = []
            continue
        except EOFError:
            break
        if not pending and line.strip().lower() in ("exit", "quit"):
            break
        pending.append(line)
        text = "\n".join(pending)
        if needs_more(text) and line.strip():
            continue
        pending = []
        if not text.strip():
            continue
        if unfinished is not None and is_parameter_start(text.lstrip(), 0):
            text = unfinished + "\n" + text.lstrip()
        session.run(text)
        unfinished = text if _lacks_mandatory(session, text) else None
    return 0


def _lacks_mandatory(session: Session, text: str) -> bool:
    error = session.last_error
    if error is None or error.error_id != "MissingMandatoryParameter":
        return False
    try:
        return len(parse(text).statements) == 1
    except ParseError:
        return False
