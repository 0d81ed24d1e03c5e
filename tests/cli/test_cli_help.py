"""Help pages through ``customerkey ... --help`` (issue 17, item 8): every command and option
has help text, flags show no ``<bool>`` placeholder, paragraphs wrap at words without orphans,
no RST markup or non-existent option shows, and a command typed under a similar group's name
gets the right suggestion."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
import typer

from customerkey.cli.main import app, main

WIDTH = 80


def _walk() -> Iterator[tuple[list[str], object]]:
    """(path, command) for every command and group under the root."""
    root = typer.main.get_command(app)
    ctx = root.make_context("customerkey", ["--help"], resilient_parsing=True)

    def visit(path: list[str], command: object) -> Iterator[tuple[list[str], object]]:
        yield path, command
        children = getattr(command, "commands", {})
        for name in list(children):
            yield from visit([*path, name], children[name])

    for name in root.list_commands(ctx):  # type: ignore[attr-defined]
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None, name
        yield from visit([name], command)


ALL = sorted(" ".join(path) for path, _ in _walk())


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in _walk():
        if not getattr(command, "help", None):
            missing.append(" ".join(path))
        for param in getattr(command, "params", []):
            if getattr(param, "hidden", False):
                continue
            if not getattr(param, "help", None):
                missing.append(f"{' '.join(path)} {param.opts[0] if param.opts else param.name}")
    assert missing == [], "no help text:\n" + "\n".join(missing)


def test_the_root_listing_matches_each_command() -> None:
    """``customerkey --help`` prints each command's line from the table in main.py without
    importing it; that line must be the command's own first sentence."""
    from customerkey.cli.main import COMMANDS, build

    root = build()
    ctx = root.make_context("customerkey", ["--help"], resilient_parsing=True)
    stale = {}
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        assert command is not None
        if command.get_short_help_str(limit=1_000) != entry.help:
            stale[name] = command.get_short_help_str(limit=1_000)
    assert stale == {}, "update COMMANDS in cli/main.py to say what each command says"


def _help(capsys: pytest.CaptureFixture[str], *path: str) -> str:
    capsys.readouterr()
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: customerkey"), out
    return out


def _paragraph_lines(page: str) -> list[list[str]]:
    """The description's paragraphs (between the usage line and the first section)."""
    body = page.split("\n\n", 1)[1] if "\n\n" in page else ""
    body = re.split(r"\n(?:Arguments|Options|Commands):\n", body)[0]
    return [block.splitlines() for block in body.split("\n\n") if block.strip()]


@pytest.mark.parametrize("path", [[]] + [p.split() for p in ALL])
def test_help_pages_read_cleanly(
    path: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    page = _help(capsys, *path)
    assert "<bool>" not in page
    assert "``" not in page and ":func:" not in page and ":class:" not in page
    assert "--server" not in page  # no such option (ps/shell once said there was)
    assert max(len(line) for line in page.splitlines()) <= WIDTH, page
    # Greedy wrapping: a line ends early only where its paragraph ends, so no line holds an
    # orphan word that the line before had room for.
    for lines in _paragraph_lines(page):
        for line, following in itertools.pairwise(lines):
            first_word = following.split()[0]
            assert len(line) + 1 + len(first_word) > WIDTH - 2, f"orphan wrap in:\n{page}"


def test_a_sub_command_of_a_similar_group_is_suggested(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["files", "put", "site", "a.txt", "a.txt"]) == 2
    assert "No such command 'files put'. Did you mean 'file put'?" in capsys.readouterr().err
    assert main(["vaults", "list"]) == 2
    assert "No such command 'vaults list'. Did you mean 'vault list'?" in capsys.readouterr().err
    assert main(["valt"]) == 2
    assert "Did you mean 'vault'?" in capsys.readouterr().err
