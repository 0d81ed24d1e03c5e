"""The newest migration is known without Alembic, and a database already there is opened
without loading Alembic (about 0.3 s of every CLI command's start-up)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from customerkey.storage.database import MIGRATIONS_DIR, Database, alembic_config, head_revision


def test_head_revision_is_alembics_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revision() == script.get_current_head()


def test_every_migration_file_is_named_for_its_revision() -> None:
    files = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))
    migrations = [f for f in files if f.name != "__init__.py"]
    assert migrations
    for path in migrations:
        match = re.search(r'^revision = "(\w+)"', path.read_text(), re.MULTILINE)
        assert match is not None, path
        assert path.name.startswith(f"{match.group(1)}_"), path.name


def test_a_database_at_head_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ck.db'}"
    db = Database(url)
    assert db.migrate()  # a new database gets every migration
    assert db.current_revision() == head_revision()
    assert db.migrate() == []
    db.dispose()
    probe = (
        "import sys\n"
        "from customerkey.storage.database import Database\n"
        f"db = Database({url!r})\n"
        "assert db.migrate() == []\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
