"""Only ``init``, ``serve`` and ``demo`` create an installation: every other command refuses
a folder that holds none, so a mistyped ``--home`` cannot start an empty one (issue 17.3)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli


def test_a_mistyped_home_is_refused_and_nothing_is_created(cli: Cli, home: Path) -> None:
    for command in (["vault", "list"], ["tenant", "list"], ["jobs", "list"], ["audit", "show"]):
        message = cli.fail(*command, error="NoInstallation")
        assert f"No installation at {home}" in message and "customerkey init" in message
    assert not home.exists()


def test_init_creates_it_and_then_every_command_works(cli: Cli, home: Path) -> None:
    cli.ok("init")
    assert (home / "master.key").exists()
    assert cli.json("vault", "list") == []


def test_a_folder_without_a_master_key_is_not_an_installation(cli: Cli, home: Path) -> None:
    home.mkdir()
    (home / "notes.txt").write_text("not an installation")
    cli.fail("vault", "list", error="NoInstallation")
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
