"""``customerkey mailbox import`` of something that is not mail: a clear error naming what was
expected, and nothing changed (no job, no item); an empty but valid store imports 0 with a
warning."""

from __future__ import annotations

import mailbox
import zipfile
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.support.mail_cli import write_envelope_mbox

UPN = "alice@contoso.com"
EXPECTED = (
    "is not a mail store: expected an mbox file (starting with a 'From ' line), an .eml "
    "message or a Maildir folder"
)


@pytest.fixture
def mailbox_cli(cli: Cli) -> Cli:
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    cli.ok("mailbox", "create", UPN)
    return cli


def _nothing_changed(cli: Cli) -> None:
    assert cli.json("jobs", "list") == []
    assert cli.json("mailbox", "stats", UPN)["ItemCount"] == 0


def _spreadsheet(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("xl/workbook.xml", "<workbook/>")
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: _spreadsheet(tmp / "q4.xlsx"), id="xlsx"),
        pytest.param(lambda tmp: _write(tmp / "hostname", b"build-host-07\n"), id="hostname"),
        pytest.param(
            lambda tmp: _write(tmp / "notes.mbox", b"Subject: hi\n\nno From_ line here\n"),
            id="mbox-without-from-lines",
        ),
        pytest.param(lambda tmp: _folder_of_files(tmp / "docs"), id="folder-of-non-mail"),
    ],
)
def test_what_is_not_a_mail_store_is_refused_naming_what_was_expected(
    mailbox_cli: Cli, tmp_path: Path, make: object
) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    error = mailbox_cli.fail("mailbox", "import", UPN, str(source), error="BadParameter")
    assert f"{source.resolve()} {EXPECTED}" in error
    _nothing_changed(mailbox_cli)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder_of_files(path: Path) -> Path:
    path.mkdir()
    (path / "report.pdf").write_bytes(b"%PDF-1.7\n")
    (path / "readme.txt").write_text("hello\n")
    return path


def test_an_eml_that_is_not_a_message_and_a_forced_format_are_refused(
    mailbox_cli: Cli, tmp_path: Path
) -> None:
    fake = _write(tmp_path / "invoice.eml", b"\x89PNG\r\n\x1a\n binary")
    error = mailbox_cli.fail("mailbox", "import", UPN, str(fake))
    assert "is not an .eml message: it does not start with RFC 5322 header fields" in error
    text = _write(tmp_path / "plain.txt", b"Dear all,\n")
    error = mailbox_cli.fail("mailbox", "import", UPN, str(text), "--format", "mbox")
    assert "is not an mbox file: it does not start with a 'From ' line" in error
    error = mailbox_cli.fail("mailbox", "import", UPN, str(tmp_path), "--format", "maildir")
    assert "is not a Maildir (no cur/ and new/ folders)" in error
    _nothing_changed(mailbox_cli)


def test_an_empty_store_imports_nothing_with_a_warning(mailbox_cli: Cli, tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.mbox", b"")
    result = mailbox_cli.run("--json", "mailbox", "import", UPN, str(empty))
    assert result.code == 0, result.err
    assert result.data()["Imported"] == 0
    assert "Warning:" in result.err and "empty mbox store" in result.err
    mailbox.Maildir(str(tmp_path / "md"), create=True)
    result = mailbox_cli.run("mailbox", "import", UPN, str(tmp_path / "md"))
    assert result.code == 0, result.err
    assert "empty maildir store" in " ".join(result.err.split())


def test_a_real_store_still_imports(mailbox_cli: Cli, tmp_path: Path) -> None:
    store = tmp_path / "mail"  # no suffix: told from its first line
    write_envelope_mbox(store, 4)
    assert mailbox_cli.json("mailbox", "import", UPN, str(store))["Imported"] == 4
    eml = _write(tmp_path / "one.eml", b"From: a@fabrikam.com\nSubject: x\n\nbody\n")
    assert mailbox_cli.json("mailbox", "import", UPN, str(eml))["Imported"] == 1
