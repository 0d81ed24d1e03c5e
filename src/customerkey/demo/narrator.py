"""How the guided demo tells a step: it prints the PowerShell lines it runs through the
cmdlet shell and their output (``Demo.run``), narrates (``Demo.say``), and checks the effect
the document describes (``Demo.step`` with ``expect``), recording a ``Check`` for the summary.
A step whose effect is not there fails (``StepFailed``) and the demo goes on with the next.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from customerkey.demo.scenario import USER
from customerkey.errors import CustomerKeyError
from customerkey.pwsh.engine.session import Session
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR


def ps_quote(text: str) -> str:
    """``text`` as a single-quoted PowerShell string."""
    return "'" + text.replace("'", "''") + "'"


def list_fields(text: str) -> dict[str, str]:
    """The ``Name : Value`` lines of Format-List output (one object)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" : ")
        if sep and name.strip():
            found[name.strip()] = value.strip()
    return found


@dataclass(frozen=True)
class Ran:
    """What one script did: whether every statement succeeded, and what it printed."""

    ok: bool
    out: str
    err: str


@dataclass
class Check:
    step: str
    cmdlet: str
    expected: str
    observed: str = ""
    ok: bool = False


class StepFailed(Exception):
    """A step's effect was not what the document says (observed is the message)."""


@dataclass
class Demo:
    runtime: Runtime
    work: Path
    console: Console
    checks: list[Check] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    dep_ids: list[str] = field(default_factory=list)
    backup: Path | None = None

    def __post_init__(self) -> None:
        self.session = Session(lambda: self.runtime, out=io.StringIO(), err=io.StringIO())

    # ------------------------------------------------------------------ running lines

    def run(self, source: str, *, session: Session | None = None, prompt: str = "PS>") -> Ran:
        """Run PowerShell lines through the cmdlet shell, printing them and their output."""
        shell = session or self.session
        for number, line in enumerate(source.splitlines()):
            lead = prompt if number == 0 else ">>"
            self.console.print(f"[bold cyan]{lead}[/] [bold]{escape(line)}[/]")
        shell.out, shell.err = io.StringIO(), io.StringIO()
        ok = shell.run(source)
        out, err = shell.out.getvalue(), shell.err.getvalue()
        if out.strip():
            self.console.print(out.strip("\n"), markup=False, highlight=False)
        if err.strip():
            self.console.print(err.rstrip("\n"), style="red" if not ok else "yellow", markup=False)
        return Ran(ok, out, err)

    def must(self, source: str) -> Ran:
        ran = self.run(source)
        if not ran.ok:
            first = ran.err.strip().splitlines()[0] if ran.err.strip() else "no error text"
            raise StepFailed(f"{source.split()[0]} failed: {first}")
        return ran

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    @contextmanager
    def step(self, title: str, cmdlet: str, expected: str) -> Iterator[Check]:
        """One summary row, narrated under a heading. A StepFailed or an error of ours inside
        marks it failed with what was observed, and the demo goes on with the next step."""
        check = Check(title, cmdlet, expected)
        self.checks.append(check)
        self.console.rule(f"[bold]{len(self.checks)}. {escape(title)}[/]", align="left")
        try:
            yield check
            check.ok = True
        except StepFailed as failed:
            check.observed = str(failed)
        except CustomerKeyError as error:
            check.observed = f"unexpected error ({error.code}): {error.message}"
        mark = "[green]as documented[/]" if check.ok else "[bold red]NOT as documented[/]"
        self.console.print(f"{mark}: {escape(check.observed)}", highlight=False)

    # ------------------------------------------------------------------ reading content

    def mail_intact(self) -> bool:
        """Every migrated message reads back as it was (through the mail service)."""
        count = len(self.runtime.mail.list_items(OPERATOR, USER))
        read = [
            self.runtime.mail.read_item(OPERATOR, USER, str(seq)).replace(b"\r\n", b"\n")
            for seq in range(1, count + 1)
        ]
        return read == self.messages

    def files_intact(self) -> bool:
        """Every site's document reads back as it was (through the files service)."""
        for url, content in self.files.items():
            out = io.BytesIO()
            self.runtime.files.download(OPERATOR, url, "Shared Documents/plan.docx", out)
            if out.getvalue() != content:
                return False
        return True

    def versions(self, vault: str, key: str) -> list[str]:
        """A key's versions, oldest first."""
        return [b.id.version for b in self.runtime.vault.list_versions(OPERATOR, vault, key)]

    def newest(self, vault: str, key: str) -> str:
        return self.runtime.vault.get_key(OPERATOR, vault, key).id.version

    def file_blobs(self) -> dict[str, str]:
        """Every files blob (whichever blob store: the local folder or S3) and its sha256."""
        store = self.runtime.files.blobs
        return {
            info.name: hashlib.sha256(store.read_bytes(info.name)).hexdigest()
            for info in store.iter_blobs("files")
        }


def expect(condition: bool, observed: str) -> str:
    """``observed`` when the effect is there; else the step fails with it."""
    if not condition:
        raise StepFailed(observed)
    return observed
