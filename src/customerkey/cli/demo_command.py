"""``customerkey demo``: the guided demo (``customerkey.demo``) in a fresh home folder."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    home: Path | None = typer.Option(
        None,
        "--home",
        help="A new or empty folder to play the story in (default: a new temporary folder).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Wipe the --home folder first when it is an existing customerkey home (its keys "
        "and data are destroyed).",
    ),
) -> None:
    """Play Microsoft's Customer Key story in a fresh home folder, checking every step.

    Every cmdlet line of Microsoft's documentation runs through the cmdlet shell, and every
    step checks its documented effect."""
    from customerkey.cli.output import console
    from customerkey.demo.guided import play, prepare_home

    if not play(prepare_home(home, force), console):
        raise typer.Exit(1)
