"""``customerkey mailbox export``: an mbox keeps each message's envelope (``From_`` line: the
sender as its Return-Path records it, the delivery date); exports are private (0600 files,
0700 folders) like backups; a missing folder is refused before any progress is shown; an I/O
error names the target, never the staging name, and leaves nothing behind."""

from __future__ import annotations

import mailbox
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.support.mail_cli import from_lines, write_envelope_mbox
from tests.support.servers import clean_env

UPN = "alice@contoso.com"
CLI = [sys.executable, "-m", "customerkey.cli.main"]


@pytest.fixture
def imported(cli: Cli, tmp_path: Path) -> Path:
    """A mailbox holding a 30-message mbox (distinct envelope senders and dates)."""
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    cli.ok("mailbox", "create", UPN)
    source = tmp_path / "source.mbox"
    write_envelope_mbox(source, 30)
    _ok(cli, "mailbox", "import", UPN, str(source))
    assert cli.json("mailbox", "stats", UPN)["ItemCount"] == 30
    return source


def _ok(cli: Cli, *args: str) -> None:
    """Run a command that must succeed (its progress bar on stderr is not checked)."""
    result = cli.run(*args)
    assert result.code == 0, result.err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_mbox_export_keeps_envelopes_and_messages_and_is_private(
    cli: Cli, imported: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "alice.mbox"
    out.parent.mkdir()
    _ok(cli, "mailbox", "export", UPN, str(out))
    assert from_lines(out) == from_lines(imported)
    original = mailbox.mbox(str(imported), create=False)
    copy = mailbox.mbox(str(out), create=False)
    assert [copy.get_bytes(k) for k in copy.iterkeys()] == [
        original.get_bytes(k) for k in original.iterkeys()
    ]
    assert _mode(out) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["alice.mbox"]  # no lock, no staging


@pytest.mark.parametrize("fmt", ["maildir", "eml"])
def test_folder_exports_are_private(cli: Cli, imported: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out-{fmt}"
    _ok(cli, "mailbox", "export", UPN, str(out), "--format", fmt)
    assert _mode(out) == 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 30
    assert {_mode(p) for p in files} == {0o600}
    assert {_mode(p) for p in out.rglob("*") if p.is_dir()} <= {0o700}


def test_export_into_a_missing_folder_is_refused_before_any_progress(
    cli: Cli, imported: Path, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "alice.mbox"
    result = cli.run("mailbox", "export", UPN, str(target))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err  # the error alone: no progress bar first
    assert lines[0].startswith("Error (BadParameter): ")
    assert f"{target.parent} does not exist" in lines[0]


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))


def test_an_io_error_names_the_target_and_leaves_nothing(
    cli: Cli, imported: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(b"From: a@fabrikam.com\nSubject: big\n\n" + b"x" * 6_000_000 + b"\n")
    _ok(cli, "mailbox", "import", UPN, str(big))
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "alice.mbox"
    # Files may not grow past 4 MB in this process: the export fails at the big message.
    done = subprocess.run(
        [*CLI, "--home", str(cli.home), "mailbox", "export", UPN, str(target)],
        capture_output=True,
        text=True,
        env=clean_env(),
        preexec_fn=_limit_file_size,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("Error (IOError): "), done.stderr
    assert str(target) in error
    assert ".partial" not in done.stderr
    assert list(folder.iterdir()) == []
