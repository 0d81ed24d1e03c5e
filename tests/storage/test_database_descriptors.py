"""A closed installation keeps no file open: ``Runtime.close`` (``Database.dispose``) releases
the SQLite write gate's lock file too, so a process that opens and closes installations (a
worker supervisor, a test session, an embedding application) does not run out of descriptors."""

from __future__ import annotations

import os
from pathlib import Path

from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR


def _open_into(folder: Path) -> list[str]:
    """This process's descriptors that point into ``folder``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_a_closed_runtime_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'ck.db'}")
    for round_no in range(5):
        runtime = Runtime.open(settings)
        try:
            # A write takes the write gate, which opens its lock file.
            runtime.vault.create_vault(
                OPERATOR, f"vault-{round_no}", subscription="sub-1", region="eastus"
            )
            assert any(p.endswith("ck.db-writer.lock") for p in _open_into(tmp_path))
        finally:
            runtime.close()
        assert _open_into(tmp_path) == []
