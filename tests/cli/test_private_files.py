"""Inside the 0700 home, the database and the blob folders are private too: the SQLite file
and its -wal/-shm companions 0600, every blob folder 0700, whatever the umask (issue 17.17)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.cli.conftest import Cli

SITE = "https://contoso.sharepoint.local/sites/finance"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_blob_folders_are_private(cli: Cli, home: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which would make them 0644 and 0755
    try:
        cli.ok("init")
        cli.json("tenant", "create", "contoso", "--mail-domain", "contoso.com")
        cli.json("site", "create", SITE)
        document = tmp_path / "q4.txt"
        document.write_bytes(b"quarterly numbers")
        cli.json("file", "put", SITE, "Shared Documents/q4.txt", str(document))
    finally:
        os.umask(old)
    database = sorted(home.glob("customerkey.db*"))
    assert home / "customerkey.db" in database
    assert {p.name: _mode(p) for p in database} == {p.name: 0o600 for p in database}
    folders = [p for p in (home / "blobs").rglob("*") if p.is_dir()]
    assert len(folders) >= 4  # files/<site>/<file>/<version>
    assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}


def test_an_older_wider_database_file_is_made_private_on_start(cli: Cli, home: Path) -> None:
    cli.ok("init")
    os.chmod(home / "customerkey.db", 0o644)
    cli.json("tenant", "list")
    assert _mode(home / "customerkey.db") == 0o600
